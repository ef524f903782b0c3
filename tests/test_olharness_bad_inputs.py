"""Bad input to the ``olharness`` command: exit status 2, one ``error:`` line, no traceback, no results.

Each row is a command line (``{run}``: a tiny seeded decoder checkpoint; ``{tmp}``: an empty folder)
and the message its one error line must hold. The commands run in-process on one shared lm-eval
task index (tests/conftest_olh.py), so a row costs about a second.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest_olh import olh_ckpts, olh_offline_env  # noqa: F401  (fixtures)

OL = ["--model", "ol", "--model_args", "pretrained={run}"]
LSM = [*OL, "--tasks", "olh_lsm"]

ROWS = [  # (id, argv, message)
    ("unknown task", [*OL, "--tasks", "olh_nope"], "Tasks not found: olh_nope"),
    ("unknown model", ["--model", "nope", "--tasks", "olh_lsm"], "Attempted to load model 'nope'"),
    ("metadata not JSON", [*LSM, "--metadata", "{bad"], "Invalid JSON: {bad"),
    ("negative limit", [*LSM, "--limit", "-1"], "--limit must be > 0"),
    ("zero limit", [*LSM, "--limit", "0"], "--limit must be > 0"),
    ("missing checkpoint", ["--model", "ol", "--model_args", "pretrained=/nonexistent/run", "--tasks", "olh_lsm"],
     "no checkpoint: /nonexistent/run does not exist"),
    ("empty checkpoint folder", ["--model", "ol", "--model_args", "pretrained={tmp}", "--tasks", "olh_lsm"],
     "no checkpoint"),
    ("unknown model argument", ["--model", "ol", "--model_args", "pretrained={run},max_len=9", "--tasks", "olh_lsm"],
     "ol: unknown model argument(s) max_len"),
    ("bad truncation", ["--model", "ol", "--model_args", "pretrained={run},truncation=right", "--tasks", "olh_lsm"],
     "ol: unknown truncation 'right'; valid: left, middle"),
    ("bad dtype", ["--model", "ol", "--model_args", "pretrained={run},dtype=float8", "--tasks", "olh_lsm"],
     "ol: unknown dtype 'float8'"),
    ("bad batch size", [*LSM, "--batch_size", "lots"], "ol: batch_size must be a positive integer or 'auto'"),
    ("bad device", [*LSM, "--device", "tpu:x"], "ol: bad device 'tpu:x'"),
    ("unknown metadata key", [*LSM, "--metadata", "ltrain=3"],
     "olh_lsm: unknown metadata key(s) ltrain; valid: l_train, run_dir, tokenizer"),
    ("unknown divergence", [*LSM, "--metadata", "divergence=cosine"], "unknown divergence 'cosine'; valid: sce"),
    ("unknown kl direction", [*LSM, "--metadata", "divergence=kl", "kl_direction=up"], "unknown kl_direction 'up'"),
    ("zero documents", [*LSM, "--metadata", "n_docs=0"], "metadata n_docs must be >= 1, got 0"),
    ("negative seed", [*LSM, "--metadata", "seed=-1"], "metadata seed must be >= 0, got -1"),
    ("l_train not a number", [*LSM, "--metadata", "l_train=abc"], "metadata l_train must be an integer"),
    ("texts missing", [*LSM, "--metadata", "texts=/nonexistent.txt"], "texts=/nonexistent.txt does not exist"),
    ("tokenizer missing", [*LSM, "--metadata", "tokenizer=/nonexistent/tok.model"],
     "cannot load tokenizer '/nonexistent/tok.model'"),
    ("texts too short for l_train", [*LSM, "--metadata", "l_train=100000"], "no held-out document has the"),
    ("ppl span too long", [*OL, "--tasks", "olh_ppl_len_1x", "--metadata", "l_train=100000"],
     "tokens one span (8 x l_train) needs"),
    ("model without lsm", ["--model", "dummy", "--tasks", "olh_lsm", "--metadata", "run_dir={run}", "n_docs=2"],
     "model 'DummyLM' cannot answer lsm requests (task olh_lsm); use --model ol"),
    ("longbench_dir missing", [*OL, "--tasks", "olh_longbench_e_trec", "--metadata", "longbench_dir=/nonexistent"],
     "longbench_dir /nonexistent is not a directory"),
    ("longbench file missing", [*OL, "--tasks", "olh_longbench_e_trec", "--metadata", "longbench_dir={tmp}"],
     "trec_e.jsonl: LongBench-E file for 'trec' not found"),
    ("mini_lc_n not a number", [*OL, "--tasks", "olh_mini_lc_passkey", "--metadata", "mini_lc_n=abc"],
     "metadata mini_lc_n must be an integer"),
    ("mini_lc l_train too small", [*OL, "--tasks", "olh_mini_lc_passkey", "--metadata", "mini_lc_l_train=32"],
     "mini_lc: l_train must be >= 64"),
]


@pytest.mark.parametrize("argv,message", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_line(olh_ckpts, tmp_path, capsys, _shared_task_index, _cli_logging, argv, message):
    from olharness.cli import main

    (tmp_path / "empty").mkdir()
    argv = [a.replace("{run}", str(olh_ckpts["decoder"])).replace("{tmp}", str(tmp_path / "empty")) for a in argv]
    if "--device" not in argv:
        argv += ["--device", "cpu"]
    rc = main([*argv, "--output_path", str(tmp_path / "out")])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert not list((tmp_path / "out").rglob("results_*.json"))  # nothing a correct rerun would trip on


def test_table_size():
    assert len(ROWS) >= 25 and len({r[0] for r in ROWS}) == len(ROWS)


def test_tokenizer_folder_runs_no_code_unless_trusted(tmp_path, monkeypatch):
    """A folder that looks like one of our HF exports (olh_export.json) but whose tokenizer is Python
    code named by its tokenizer_config.json: that code runs only with trust_remote_code=True."""
    from olharness.task_common import resolve_tokenizer
    from trainer.errors import OLHError

    monkeypatch.setenv("OLH_PROBE", str(tmp_path / "ran"))
    d = tmp_path / "evil"
    d.mkdir()
    (d / "olh_export.json").write_text("{}")
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["evil_tok.EvilTokenizer", None]}}))
    (d / "evil_tok.py").write_text("import os, pathlib\npathlib.Path(os.environ['OLH_PROBE']).write_text('x')\n"
                                   "from transformers import PreTrainedTokenizer as EvilTokenizer\n")
    with pytest.raises(OLHError, match="cannot load tokenizer"):
        resolve_tokenizer({"tokenizer": str(d)}, "olh_lsm")
    with pytest.raises(OLHError, match="cannot load tokenizer"):
        resolve_tokenizer({"pretrained": str(d)}, "olh_lsm")
    assert not (tmp_path / "ran").exists()
    with pytest.raises(Exception):  # noqa: B017 - the fake tokenizer itself is broken; what matters is it ran
        resolve_tokenizer({"tokenizer": str(d), "trust_remote_code": "True"}, "olh_lsm")
    assert (tmp_path / "ran").exists()
