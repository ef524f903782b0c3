"""DeepSpeed ZeRO 0-3 (and 3 + CPU offload) in real two-process runs under the `deepspeed` launcher.

Every step's loss agrees across the stages; kill -9 (before the first checkpoint, between the renames
of a save) and SIGINT/SIGTERM (to the whole process group during start-up, to one worker, to the
runner alone) are followed by `--resume --out DIR` and must reproduce the uninterrupted run's
metrics.jsonl and final weights bit for bit.

On a machine without GPUs DeepSpeed picks its CPU accelerator and gloo/shm collectives; each run
takes ~15 s (the first one also JIT-builds DeepSpeed's shm comm op, ~40 s once per machine)."""
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.conftest import REPO
from tests.helpers import GOLDEN, metrics
from tests.test_faults import assert_identical, catches_sigterm, lines, logged, weights
from trainer.checkpoint import load_model

GOLD = json.loads(GOLDEN.read_text())
STEPS, SAVE_EVERY = 8, 2
DEEPSPEED = str(Path(sys.executable).parent / "deepspeed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, env=None):
    """The launcher in its own session (so the test can signal its whole process group)."""
    port = free_port()
    cmd = [DEEPSPEED, "--num_gpus", "2", "--master_port", str(port), "--module", "trainer.train", *args]
    p = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    p.port = port
    return p


def shm_buffers(p) -> list[Path]:
    """DeepSpeed's CPU allreduce buffers of this launch (named by user, address and port, one per rank);
    trainer/runtime.py unlinks them once every rank has mapped its own."""
    return sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{p.port}_*"))


def finish(p, timeout=600):
    out, _ = p.communicate(timeout=timeout)
    deadline = time.monotonic() + 60
    while _group_alive(p.pid):  # launcher and workers all gone: nothing left behind
        assert time.monotonic() < deadline, f"processes left behind in group {p.pid}"
        time.sleep(0.1)
    return p.returncode, out


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def workers(p) -> list[psutil.Process]:
    try:
        procs = psutil.Process(p.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return sorted((q for q in procs if "--local_rank=" in " ".join(_cmdline(q))), key=lambda q: " ".join(_cmdline(q)))


def _cmdline(q):
    try:
        return q.cmdline()
    except psutil.Error:
        return []


def wait_for(pred, p, timeout=600):
    t0 = time.monotonic()
    while not pred():
        assert p.poll() is None, f"exited early ({p.returncode}): {p.communicate()[0][-3000:]}"
        assert time.monotonic() - t0 < timeout, "timed out waiting for the kill point"
        time.sleep(0.02)


def step_of(out) -> int:
    return json.loads((Path(out) / "checkpoint/trainer_state.json").read_text())["step"]


@pytest.fixture(scope="module")
def args(tiny_run):
    tok = tiny_run("decoder") / "checkpoint/tokenizer.model"
    return ["--preset", "tiny", "--max_steps", str(STEPS), "--save_every", str(SAVE_EVERY), "--threads", "1", "--log_every", "1",
            "--tokenizer", str(tok)]


@pytest.fixture(scope="module")
def refs(args, tmp_path_factory):
    """Uninterrupted 2-process runs, one per ZeRO stage, made on first use."""
    made = {}

    def get(stage):
        if stage not in made:
            out = tmp_path_factory.mktemp(stage) / "run"
            p = start(["--deepspeed", f"ds_configs/{stage}.json", *args, "--out", str(out)])
            rc, log = finish(p)
            assert rc == 0, log[-3000:]
            assert not shm_buffers(p), "a finished run left its shared-memory buffers in /dev/shm"
            made[stage] = out
        return made[stage]
    return get


def test_every_step_agrees_across_zero_stages(refs):
    base = logged(refs("zero0"))
    assert [r["step"] for r in base] == list(range(1, STEPS + 1))
    # rank 0 draws the same first batch and l_extra as a single-process run: same first loss
    assert base[0]["loss"] == pytest.approx(GOLD["decoder-align-default"]["loss"][0], abs=1e-5)
    w0 = weights(refs("zero0"))
    for stage in ("zero1", "zero2", "zero3", "zero3_offload"):
        rows = logged(refs(stage))
        for key in ("loss", "lm_loss", "mis"):
            assert [r[key] for r in rows] == pytest.approx([r[key] for r in base], abs=1e-6), (stage, key)
        w = weights(refs(stage))
        assert all(torch.allclose(w[k], w0[k], atol=1e-5) for k in w0), stage
        summary = json.loads((refs(stage) / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["steps"] == STEPS
        state = json.loads((refs(stage) / "checkpoint/trainer_state.json").read_text())
        assert state["world_size"] == 2 and set(state["sampler"]) == {"0", "1"} and state["deepspeed"]
    model, cfg, tok = load_model(refs("zero3"))  # gathered full weights load into a plain model
    assert all(torch.equal(p, weights(refs("zero3"))[n]) for n, p in model.state_dict().items())


def test_zero2_kill9_before_a_checkpoint_and_between_renames(args, refs, tmp_path):
    out = tmp_path / "run"
    p = start(["--deepspeed", "ds_configs/zero2.json", *args, "--out", str(out)])
    wait_for(lambda: lines(out / "metrics.jsonl") >= 1, p)  # step 1 logged, first checkpoint at 2
    os.killpg(p.pid, signal.SIGKILL)
    finish(p)
    assert not (out / "checkpoint").exists()
    assert not shm_buffers(p), "a killed run left its shared-memory buffers in /dev/shm (69 MB per rank)"

    rc, log = finish(start(["--resume", "--out", str(out)], {"OLH_FAULT": "save-between-renames@4"}))
    assert rc != 0 and (out / "checkpoint.old").exists() and not (out / "checkpoint").exists(), log[-3000:]

    rc, log = finish(start(["--resume", "--out", str(out)]))
    assert rc == 0, log[-3000:]
    assert_identical(out, refs("zero2"), STEPS)


def test_zero3_signals_to_group_worker_and_runner(args, refs, tmp_path):
    out = tmp_path / "run"
    # Ctrl-C to the whole group while the workers are still importing: every rank stops before training
    p = start(["--deepspeed", "ds_configs/zero3.json", *args, "--out", str(out)])
    wait_for(lambda: len(ws := workers(p)) == 2 and all(catches_sigterm(w.pid) for w in ws), p)
    os.killpg(p.pid, signal.SIGINT)
    rc, log = finish(p)
    # (the `deepspeed` runner itself dies of the KeyboardInterrupt with its own traceback; no worker has
    # one). Nothing was trained, so nothing is saved: the launcher kills its workers 30 s after a signal.
    assert rc != 0 and not (out / "checkpoint").exists() and str(REPO / "trainer") not in log, log[-3000:]
    assert "stopped during start-up, before training; run the same command again" in log

    # SIGTERM to rank 1 only: both ranks agree on the stop step and write one checkpoint
    p = start(["--deepspeed", "ds_configs/zero3.json", *args, "--out", str(out)])
    wait_for(lambda: lines(out / "metrics.jsonl") >= 3, p)
    workers(p)[1].send_signal(signal.SIGTERM)
    rc, log = finish(p)
    hint = log.split("continue with: ")[1].splitlines()[0]
    assert hint == f"deepspeed --num_gpus 2 --module trainer.train --resume --out {out}"
    resume = shlex.split(hint)[5:]  # run verbatim (start() adds the launcher and a free port)
    stopped = step_of(out)
    assert rc != 0 and stopped >= 3 and lines(out / "metrics.jsonl") == stopped, log[-3000:]
    assert str(REPO / "trainer") not in log and "continue with: " in log

    # SIGTERM to the `deepspeed` runner alone (it does not pass it on): the workers notice and stop
    p = start(resume)
    wait_for(lambda: lines(out / "metrics.jsonl") >= stopped + 1, p)
    p.send_signal(signal.SIGTERM)
    rc, log = finish(p)
    assert rc == -signal.SIGTERM and step_of(out) >= stopped + 1 and lines(out / "metrics.jsonl") == step_of(out)

    rc, log = finish(start(resume))
    assert rc == 0, log[-3000:]
    assert_identical(out, refs("zero3"), STEPS)
