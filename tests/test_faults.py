"""kill -9, SIGINT and SIGTERM at the worst moments of a plain run and of a grid: the resumed run's
metrics.jsonl and final weights equal an uninterrupted run's bit for bit, no step is logged twice or
lost, and an interrupted process exits 130/143 with a resume hint that works verbatim.

Kill points come from two sources: watching metrics.jsonl for a seeded random step (anywhere in the
loop, before or after a checkpoint) and OLH_FAULT=POINT@STEP, which makes the trainer kill -9 itself
inside a save or inside the metrics cut of a resume (trainer/checkpoint.py `fault_point`)."""
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.helpers import metrics
from trainer.checkpoint import recover_checkpoint
from trainer.lifecycle import RunLock

STEPS, SAVE_EVERY = 12, 4
TIMING = ("tokens_per_s", "step_ms", "fwd_ms_long", "fwd_ms_short", "mis_ms")


def logged(run) -> list[dict]:
    """metrics.jsonl without the wall-clock fields (those differ between any two runs)."""
    return [{k: v for k, v in r.items() if k not in TIMING and not k.endswith("_ms")} for r in metrics(run)]


def weights(run) -> dict:
    return load_file(str(Path(run) / "checkpoint/model.safetensors"))


def assert_identical(run, ref, steps=STEPS):
    a, b = logged(run), logged(ref)
    assert [r["step"] for r in a] == list(range(1, steps + 1))  # every step exactly once, in order
    assert a == b
    wa, wb = weights(run), weights(ref)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def lines(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


def trainer(args, env=None, **kw):
    cmd = [sys.executable, "-m", "trainer.train", *args]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for(pred, proc, timeout=300):
    t0 = time.monotonic()
    while not pred():
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.communicate()[1][-2000:]}"
        assert time.monotonic() - t0 < timeout, "timed out waiting for the kill point"
        time.sleep(0.01)


def catches_sigterm(pid: int) -> bool:
    """Has the process installed a SIGTERM handler yet (its SigCgt mask in /proc)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(mask >> (signal.SIGTERM - 1) & 1)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_run):
    """Arguments of the faulted runs (tiny decoder with alignment, a checkpoint every 4 steps, one thread,
    a shared tokenizer, every step written to metrics.jsonl at once so that kill points can be watched)
    and an uninterrupted reference run made by the same CLI."""
    tok = tiny_run("decoder") / "checkpoint/tokenizer.model"
    args = ["--preset", "tiny", "--max_steps", str(STEPS), "--save_every", str(SAVE_EVERY), "--threads", "1", "--log_every", "1",
            "--tokenizer", str(tok)]
    ref = tmp_path_factory.mktemp("ref") / "run"
    rc, _, err = finish(trainer(args + ["--out", str(ref)]))
    assert rc == 0, err
    return args, ref


def test_kill9_chain_plain_run(base, tmp_path):
    """One run killed at every kind of point in turn, each time resumed with `--resume --out DIR`:
    before the first checkpoint; inside a save (files written, not yet complete); between the two
    renames of a save; while a resume cuts metrics.jsonl back; at a random step after a checkpoint,
    with a torn last log line; after the renames before the old checkpoint is deleted."""
    args, ref = base
    out = tmp_path / "run"
    log = out / "metrics.jsonl"
    rnd = random.Random(13)
    resume = ["--resume", "--out", str(out)]

    p = trainer(args + ["--out", str(out)])  # 1. before the first checkpoint (step 1..3)
    k = rnd.randint(1, SAVE_EVERY - 1)
    wait_for(lambda: lines(log) >= k, p)
    p.kill()
    finish(p)
    assert not (out / "checkpoint").exists()

    rc, _, _ = finish(trainer(resume, {"OLH_FAULT": "save-files@4"}))  # 2. inside the first save
    assert rc == -signal.SIGKILL and (out / "checkpoint.tmp").exists() and not (out / "checkpoint").exists()

    rc, _, _ = finish(trainer(resume, {"OLH_FAULT": "save-between-renames@8"}))  # 3. between the renames
    assert rc == -signal.SIGKILL and (out / "checkpoint.old").exists() and not (out / "checkpoint").exists()
    assert json.loads((out / "checkpoint.tmp/trainer_state.json").read_text())["step"] == 8

    rc, _, _ = finish(trainer(resume, {"OLH_FAULT": "metrics-cut@8"}))  # 4. inside the resume's log cut
    assert rc == -signal.SIGKILL and lines(log) >= 8

    p = trainer(resume)  # 5. a random step after the checkpoint of step 8, then a torn last line
    k = rnd.randint(9, STEPS - 1)
    wait_for(lambda: lines(log) >= k, p)
    p.kill()
    finish(p)
    with open(log, "a") as fh:
        fh.write('{"step": 99, "loss": 1.')

    rc, _, _ = finish(trainer(resume, {"OLH_FAULT": "save-before-cleanup@12"}))  # 6. after the final save's renames
    assert rc == -signal.SIGKILL and (out / "checkpoint.old").exists()
    rc, _, err = finish(trainer(resume))  # trained to the end but killed before its summary: writes it
    assert rc == 0 and "wrote its missing summary.json" in err, err
    assert not (out / "checkpoint.old").exists()
    assert json.loads((out / "summary.json").read_text())["final_loss"] == logged(ref)[-1]["loss"]
    rc, _, err = finish(trainer(resume))  # a finished run: nothing to do, says so, changes nothing
    assert rc == 2 and "already finished (12 steps)" in err
    assert_identical(out, ref)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_once_and_the_hint_resumes_exactly(base, tmp_path, sig, code):
    """SIGINT/SIGTERM during start-up (imports): exit 128 + signal before training, nothing to save;
    mid-run: one checkpoint at the stop step and a `continue with: ...` command that, run verbatim,
    ends the run exactly as the uninterrupted one."""
    args, ref = base
    out = tmp_path / "run"
    p = trainer(args + ["--out", str(out)])
    wait_for(lambda: catches_sigterm(p.pid), p)  # trainer/train.py's first lines ran: now inside the imports
    p.send_signal(sig)
    rc, _, err = finish(p)
    assert rc == code and "Traceback" not in err, err
    assert not (out / "checkpoint").exists()  # nothing trained, nothing saved
    assert err.strip().splitlines()[-1] == "stopped during start-up, before training; run the same command again"

    p = trainer(args + ["--out", str(out)])
    wait_for(lambda: lines(out / "metrics.jsonl") >= 6, p)  # after the checkpoint of step 4
    p.send_signal(sig)
    rc, _, err = finish(p)
    assert rc == code and "Traceback" not in err, err
    hint = err.strip().splitlines()[-1].split("continue with: ")[1]
    assert hint == f"python -m trainer.train --resume --out {out}"
    step = json.loads((out / "checkpoint/trainer_state.json").read_text())["step"]
    assert step >= 6 and lines(out / "metrics.jsonl") == step  # the log ends where the checkpoint is
    assert json.loads((out / "summary.json").read_text())["steps"] == step

    rc, _, err = finish(trainer(shlex.split(hint)[3:]))
    assert rc == 0, err
    assert_identical(out, ref)


def test_second_ctrl_c_aborts_without_a_traceback_and_loses_nothing_saved(base, tmp_path):
    """Two Ctrl-C in a row: the second aborts at once (or the first already finished its save); either
    way exit 130, no traceback, and the resumed run still equals the uninterrupted one."""
    args, ref = base
    out = tmp_path / "run"
    p = trainer(args + ["--out", str(out)])
    wait_for(lambda: lines(out / "metrics.jsonl") >= 5, p)
    p.send_signal(signal.SIGINT)
    time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    rc, _, err = finish(p)
    assert rc == 130 and "Traceback" not in err, err
    # the second Ctrl-C may land between the two renames of the stop's save (checkpoint.old/ and a complete
    # checkpoint.tmp/, no checkpoint/); --resume repairs that first, as here
    recover_checkpoint(out)
    assert json.loads((out / "checkpoint/trainer_state.json").read_text())["step"] >= 4
    rc, _, err = finish(trainer(["--resume", "--out", str(out)]))
    assert rc == 0, err
    assert_identical(out, ref)


GRID = """
name: g
base: {{preset: tiny, max_steps: {steps}, save_every: 4, tokenizer: {tok}}}
seeds: [0]
axes:
  alpha: [0.0, 0.1]
eval:
  tasks: []
"""


def grid_cmd(spec, root):
    return [sys.executable, "-m", "trainer.ablate", str(spec), "--root", str(root), "--threads", "1",
            "--no_report"]


def test_grid_interrupted_and_killed_then_rerun_runs_every_cell_once(tmp_path, tiny_run):
    spec = tmp_path / "g.yaml"
    spec.write_text(GRID.format(steps=STEPS, tok=tiny_run("decoder") / "checkpoint/tokenizer.model"))
    root = tmp_path / "runs"
    gdir = root / "g"

    def training_cell_at(n):  # some cell's metrics.jsonl has n lines
        return lambda: any(lines(m) >= n for m in gdir.glob("*/metrics.jsonl"))

    # Ctrl-C to the runner (pid only) while the first cell trains: it stops that cell (a checkpoint),
    # starts no other and exits 130
    p = subprocess.Popen(grid_cmd(spec, root), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(training_cell_at(6), p)
    p.send_signal(signal.SIGINT)
    rc, _, err = finish(p)
    assert rc == 130 and "Traceback" not in err, err
    assert not (gdir / "results.jsonl").exists() or not (gdir / "results.jsonl").read_text()
    assert len(list(gdir.glob("*/checkpoint"))) == 1  # the queued cell never started

    # rerun, and kill -9 the runner while the second cell trains (its trainer gets SIGTERM and saves)
    p = subprocess.Popen(grid_cmd(spec, root), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: sum(lines(m) >= 2 for m in gdir.glob("*/metrics.jsonl")) == 2, p)
    p.kill()
    finish(p)

    rc, out, err = finish(subprocess.Popen(grid_cmd(spec, root), cwd=REPO, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))
    assert rc == 0, err
    text = (gdir / "results.jsonl").read_text()
    rows = [json.loads(x) for x in text.splitlines()]
    assert text.endswith("\n") and sorted(r["overrides"]["alpha"] for r in rows) == [0.0, 0.1]
    assert all(r["train"]["steps"] == STEPS for r in rows)
    for r in rows:
        assert [m["step"] for m in metrics(r["run_dir"])] == list(range(1, STEPS + 1))


def test_second_grid_runner_is_refused_in_process(tmp_path, capsys):
    from trainer.ablate import main
    spec = tmp_path / "g.yaml"
    spec.write_text(GRID.format(steps=2, tok="x"))
    (tmp_path / "runs/g").mkdir(parents=True)
    lock = RunLock(tmp_path / "runs/g", "a grid runner").acquire()
    try:
        assert main([str(spec), "--root", str(tmp_path / "runs"), "--no_report"]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "in use by pid" in err[0]
