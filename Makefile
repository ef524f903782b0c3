# The two commands of the README. Both set up .venv on a fresh machine (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.olh-installed

.PHONY: demo test setup corpus clean-venv

setup: $(STAMP)

# torch first (the pinned CPU wheel on disk; any other spec pulls GBs of CUDA packages), then
# DeepSpeed without building ops, then this package.
$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q torch==2.13.0
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation deepspeed==0.19.8
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

# Jane Austen from Debian's r-cran-janeaustenr; on a fresh machine apt's package lists may be empty,
# so a failed lookup refreshes them once and tries again.
corpus: setup
	$(PY) -m trainer.data.fetch || (apt-get update -qq && $(PY) -m trainer.data.fetch)

demo: setup corpus
	$(PY) -m scripts.demo

test: setup
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
