"""The three ways to reach ``ol`` and our tasks, and the errors a user sees.

1. ``olharness ...`` (``olharness.cli``): lm_eval's command line with our model and tasks.
2. stock ``lm_eval --model ol --tasks tasks/<file>.yaml``.
3. ``lm_eval.simple_evaluate(model=OLM(...), tasks=..., task_manager=TaskManager(include_path=...))``.

Bad input on route 1 (one ``error:`` line, exit 2): tests/test_olharness_bad_inputs.py.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest_olh import REPO, olh_ckpts, olh_offline_env, subprocess_env  # noqa: F401  (fixtures)


def test_fresh_interpreter_resolves_ours_and_builtins():
    code = ("import olharness\n"
            "from lm_eval.api.registry import get_model\n"
            "print(get_model('ol').__name__, get_model('dummy').__name__, get_model('hf').__name__, "
            "get_model('hf-lsm').__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OLM", "DummyLM", "HFLM", "HFLSM"]


def test_registration_is_idempotent_and_points_at_our_tasks():
    from lm_eval.api.registry import get_model

    from olharness.registration import MODELS, TASKS_DIR, register_models

    register_models()
    register_models()
    assert get_model("dummy").__name__ == "DummyLM"
    assert {p.name for p in Path(TASKS_DIR).glob("*/olh_*.yaml")} >= {"olh_lsm.yaml", "olh_ppl_len_1x.yaml",
                                                                     "olh_lsm_ll.yaml"}
    assert {"ol", "hf-lsm", "hf-mid"} <= set(MODELS)
    for name, target in MODELS.items():  # every lazy target exists
        mod, _, attr = target.partition(":")
        assert hasattr(__import__(mod, fromlist=[attr]), attr), name


def _results(out_dir: Path) -> dict:
    (f,) = sorted(out_dir.rglob("results_*.json"))
    return json.loads(f.read_text())


def test_route1_olharness_command(olh_ckpts, tmp_path, capsys, _shared_task_index, _cli_logging):
    from olharness.cli import main

    run = str(olh_ckpts["decoder"])
    rc = main(["--model", "ol", "--model_args", f"pretrained={run}", "--tasks", "olh_lsm,olh_ppl_len_2x",
               "--device", "cuda:0", "--batch_size", "auto", "--metadata", "n_docs=2",
               "--output_path", str(tmp_path)])
    assert rc == 0
    res = _results(tmp_path)
    assert res["results"]["olh_lsm"]["lsm,none"] > 0
    assert res["results"]["olh_ppl_len_2x"]["token_perplexity,none"] > 1
    md = res["configs"]["olh_lsm"]["metadata"]  # run_dir / l_train / tokenizer injected from pretrained
    assert md["run_dir"] == run and md["l_train"] == 32 and md["tokenizer"].endswith("tokenizer.model")
    assert "olh_lsm" in capsys.readouterr().out  # lm-eval's result table


def test_route2_stock_lm_eval_with_task_files(olh_ckpts, tmp_path):
    lm_eval = shutil.which("lm_eval", path=str(Path(sys.executable).parent))
    cmd = [lm_eval] if lm_eval else [sys.executable, "-m", "lm_eval"]
    run = str(olh_ckpts["rnn"])
    out = subprocess.run([*cmd, "--model", "ol", "--model_args", f"pretrained={run}", "--tasks",
                          "tasks/lsm/olh_lsm.yaml", "tasks/ppl_len/olh_ppl_len_1x.yaml", "--device", "cpu",
                          "--metadata", "n_docs=2", "--output_path", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = _results(tmp_path)["results"]
    assert res["olh_lsm"]["lsm,none"] > 0 and res["olh_ppl_len_1x"]["bits_per_byte,none"] > 0


def test_route3_simple_evaluate(olh_ckpts):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from olharness import TASKS_DIR
    from olharness.model import OLM

    run = str(olh_ckpts["encdec"])
    tm = TaskManager(include_path=[TASKS_DIR], include_defaults=False, metadata={"run_dir": run, "n_docs": 2})
    out = simple_evaluate(model=OLM(pretrained=run, device="cpu"), tasks=["olh_lsm_ranges", "olh_ppl_len_1x"],
                          task_manager=tm)
    r = out["results"]
    assert {"olh_lsm", "olh_lsm_1x_2x", "olh_lsm_2x_4x", "olh_ppl_len_1x"} <= set(r)
    assert all(r[t]["lsm,none"] > 0 for t in ("olh_lsm", "olh_lsm_1x_2x", "olh_lsm_2x_4x"))
