"""Shared fixtures of the olharness (lm-eval plugin) tests: tiny seeded checkpoints, offline env.

Checkpoints are built without training (seeded init of the ``tiny`` preset + a sentencepiece
tokenizer trained on the Austen fixture), in the layout ``trainer.checkpoint.load_model`` reads:
RUN/checkpoint/{config.json, tokenizer.model, model.safetensors}. Building all three families takes
a few seconds once per session (cached at module level, so importing these fixtures into several
test modules still builds them once).

Wire-up: ``pytest_plugins = ["tests.conftest_olh"]`` in tests/conftest.py, or import the fixtures.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AUSTEN_FIXTURE = REPO / "tests" / "assets" / "austen" / "Rdata.rdb"
ARCHS = ("decoder", "encdec", "rnn")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OLH_AUSTEN": str(AUSTEN_FIXTURE), "TOKENIZERS_PARALLELISM": "false"}

_BUILT: dict[str, Path] = {}


def tiny_config(arch: str, pe: str = "rope"):
    from trainer.config import preset

    cfg = preset("tiny")
    cfg.model.arch, cfg.model.pe = arch, pe
    return cfg


def build_checkpoint(root: Path, arch: str, pe: str = "rope", seed: int = 0) -> Path:
    """A run directory with an untrained, seeded tiny model of the given family."""
    import torch
    from safetensors.torch import save_file

    from trainer.data import Tokenizer, load_corpus
    from trainer.models import build_model

    run = root / f"{arch}_{pe}"
    ck = run / "checkpoint"
    ck.mkdir(parents=True, exist_ok=True)
    tok_path = root / "tokenizer.model"
    if not tok_path.exists():
        Tokenizer.train(load_corpus(f"austen:{AUSTEN_FIXTURE}").train, tok_path, vocab_size=512)
    cfg = tiny_config(arch, pe)
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    cfg.save(ck / "config.json")
    (ck / "tokenizer.model").write_bytes(tok_path.read_bytes())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ck / "model.safetensors"))
    return run


@pytest.fixture(autouse=True)
def olh_offline_env(monkeypatch):
    """Offline, the Austen fixture, and one torch thread (tiny models; spinning threads only slow
    down a shared CPU)."""
    import torch

    for k, v in OFFLINE_ENV.items():
        monkeypatch.setenv(k, v)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def olh_ckpts(tmp_path_factory) -> dict[str, Path]:
    """{"decoder" | "encdec" | "rnn": run directory} of tiny seeded checkpoints."""
    if not _BUILT:
        root = tmp_path_factory.mktemp("olh_ckpts")
        old = os.environ.get("OLH_AUSTEN")
        os.environ["OLH_AUSTEN"] = str(AUSTEN_FIXTURE)
        try:
            for arch in ARCHS:
                _BUILT[arch] = build_checkpoint(root, arch)
        finally:
            if old is None:
                os.environ.pop("OLH_AUSTEN", None)
            else:
                os.environ["OLH_AUSTEN"] = old
    return dict(_BUILT)


def subprocess_env() -> dict[str, str]:
    """Environment for a child process: offline, our package importable."""
    env = dict(os.environ, **OFFLINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="session")
def _shared_task_index():
    """lm-eval's CLI indexes its ~10k built-in task YAMLs on every run; in-process CLI tests share one index."""
    from lm_eval.tasks import _index

    saved = _index.TaskIndex.__dict__["build"]  # the staticmethod object itself, to restore as is
    orig = _index.TaskIndex.build
    cache: dict = {}

    def build(paths, *, resolve_includes=True):
        key = (tuple(str(p) for p in paths), resolve_includes)
        if key not in cache:
            cache[key] = orig(paths, resolve_includes=resolve_includes)
        return dict(cache[key])

    _index.TaskIndex.build = staticmethod(build)
    yield
    _index.TaskIndex.build = saved


@pytest.fixture
def _cli_logging():
    """lm-eval's setup_logging binds a handler to the sys.stderr of its first call; under pytest's
    capture that stream is gone by the next test, so give each in-process CLI run its own."""
    import logging

    import lm_eval.utils

    yield
    lm_eval.utils._LOGGING_CONFIGURED = False
    logger = logging.getLogger("lm_eval")
    for h in list(logger.handlers):
        logger.removeHandler(h)
