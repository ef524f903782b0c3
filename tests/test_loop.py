"""The training loop's step and logging: no host reads inside a step, a non-finite loss still stops
the run, gradient accumulation, MFU, and the --report_to sinks."""
import csv

import pytest
import torch

import trainer.train as train_mod
from tests.helpers import metrics, train_tiny
from trainer.config import preset
from trainer.errors import OLHError
from trainer.flops import step_flops
from trainer.models import build_model
from trainer.alignment import Objective

HOST_READS = ("item", "tolist", "__bool__", "__float__")


def test_a_training_step_never_reads_the_device(tmp_path, monkeypatch):
    """Inside train_step (optimizer internals aside) no tensor is read back to the host, so a GPU
    runs ahead until the logging step."""
    reads, inside = [], [False]
    for name in HOST_READS:
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **kw):
            if inside[0]:
                reads.append(_name)
            return _orig(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, spy)
    real_step = train_mod.train_step

    def counted(tr, step):
        opt_step = tr.optimizer.step

        def quiet_opt_step(*a, **kw):  # the CPU optimizer reads its step counters; not ours to judge
            inside[0] = False
            try:
                return opt_step(*a, **kw)
            finally:
                inside[0] = True
        tr.optimizer.step = quiet_opt_step
        inside[0] = True
        try:
            return real_step(tr, step)
        finally:
            inside[0] = False
            tr.optimizer.step = opt_step
    monkeypatch.setattr(train_mod, "train_step", counted)
    rows = metrics(train_tiny(tmp_path / "r", max_steps=4, log_every=2, alpha=0.1, target="hidden+logits"))
    assert len(rows) == 4 and reads == []


def test_non_finite_loss_stops_at_the_next_logging_step(tmp_path, monkeypatch):
    real = Objective.__call__

    def poisoned(self, model, seq, step, gen):
        loss, m = real(self, model, seq, step, gen)
        return (loss * float("nan") if step == 2 else loss), m
    monkeypatch.setattr(Objective, "__call__", poisoned)
    with pytest.raises(OLHError, match=r"loss became nan at step 3; lower --lr or check the data"):
        train_tiny(tmp_path / "r", max_steps=10, log_every=5)
    assert [r["step"] for r in metrics(tmp_path / "r")] == [1, 2]  # the steps before it, nothing after
    assert not (tmp_path / "r/checkpoint").exists()


def test_a_signal_stops_the_run_at_the_next_logging_step(tmp_path, monkeypatch):
    """The stop flag is read (under DeepSpeed: agreed by an all-reduce) only where the log reads the
    device anyway, so a SIGTERM during step 4 with --log_every 3 ends the run at step 6, saved."""
    import json
    import os
    import signal
    real_step = train_mod.train_step

    def signalled(tr, step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(tr, step)
    monkeypatch.setattr(train_mod, "train_step", signalled)
    out = tmp_path / "r"
    cfg = preset("tiny")
    for k, v in dict(out=str(out), max_steps=20, log_every=3, save_every=0).items():
        cfg.set(k, v)
    summary = train_mod.train(cfg)
    assert summary["signal"] == signal.SIGTERM and summary["steps"] == 6
    assert json.loads((out / "checkpoint/trainer_state.json").read_text())["step"] == 6
    assert [r["step"] for r in metrics(out)] == list(range(1, 7))


def test_grad_accum_matches_the_larger_batch(tmp_path):
    big = metrics(train_tiny(tmp_path / "a", max_steps=5, alpha=0.0, batch_size=4))
    acc = metrics(train_tiny(tmp_path / "b", max_steps=5, alpha=0.0, batch_size=2, grad_accum=2))
    assert [r["loss"] for r in acc] == pytest.approx([r["loss"] for r in big], abs=1e-5)
    assert acc[0]["tokens_per_s"] > 0 and big[0]["loss"] != big[1]["loss"]


def test_model_flops_count_every_matmul_and_attention():
    cfg = preset("tiny")
    cfg.align.alpha = 0.1
    model = build_model(cfg.model)
    obj = Objective(cfg, model.kind)
    B, L, d, n = cfg.train.batch_size, cfg.data.seq_len, cfg.model.d_model, cfg.model.n_layer
    matmul = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2)  # incl. the tied head
    want = 2 * B * (6 * matmul * L + 12 * n * d * L * L)  # offset: two views of L tokens
    assert step_flops(cfg, obj, model.kind, world=1) == pytest.approx(want, rel=1e-12)


def test_mfu_is_null_on_cpu_unless_a_peak_is_given(tmp_path):
    run = train_tiny(tmp_path / "a", max_steps=2, alpha=0.0)
    assert [r["mfu"] for r in metrics(run)] == [None, None]
    run = train_tiny(tmp_path / "b", max_steps=2, alpha=0.0, peak_tflops=0.001)
    summary = __import__("json").loads((run / "summary.json").read_text())
    for r in metrics(run):
        assert r["mfu"] == pytest.approx(summary["model_flops_per_step"] / (r["step_ms"] / 1e3) / 1e9, rel=1e-9)
    assert summary["mfu"] is not None


def test_report_to_csv_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = train_tiny(tmp_path / "r", max_steps=3, report_to="csv,tensorboard")
    rows = metrics(run)
    with open(run / "metrics.csv") as f:
        got = list(csv.DictReader(f))
    assert [float(r["loss"]) for r in got] == [r["loss"] for r in rows]
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    ev = acc.Scalars("train/loss")
    assert [e.step for e in ev] == [1, 2, 3]
    assert [e.value for e in ev] == pytest.approx([r["loss"] for r in rows], rel=1e-6)


def test_report_to_errors_are_one_line(tmp_path, capsys):
    argv = ["--preset", "tiny", "--out", str(tmp_path / "r")]
    assert train_mod.main([*argv, "--report_to", "mlflow"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "error: unknown reporter 'mlflow'; valid: none, csv, tensorboard, wandb"
    try:
        import wandb  # noqa: F401
    except ImportError:
        assert train_mod.main([*argv, "--report_to", "wandb"]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == \
            "error: --report_to wandb needs the wandb package: pip install wandb"


def test_readme_speed_table_is_the_committed_benchmark():
    """The README's Speed tables (and those of docs/bench/HISTORY.md) are what bench_train prints for the
    JSON committed under docs/bench/."""
    import json
    from pathlib import Path

    from benchmarks.bench_train import table
    root = Path(__file__).parent.parent
    for doc, names in (("README.md", ("bench_train_after_1930fe1.json", "bench_train_before6_977b5cc.json")),
                       ("docs/bench/HISTORY.md", (
                           "bench_train_after_2e0bf3b.json", "bench_train_before_e9c6ec7.json",
                           "bench_train_quiet_1cff90a.json", "bench_train_aa783b8.json",
                           "bench_train_compile_aa783b8.json", "bench_train_quiet_04d2617.json",
                           "bench_train_quiet2_04d2617.json"))):
        text = (root / doc).read_text()
        for name in names:
            res = json.loads((root / "docs/bench" / name).read_text())
            assert res["machine"]["commit"] and len(res["results"]) in (1, 3)
            assert table(res) in text, (doc, name)


def test_a_cpu_run_keeps_freed_memory_for_reuse():
    """After keep_freed_memory, memory a step frees is reused by the next without page faults (a step's worth
    of activations here: twenty 16 MiB tensors). Without it glibc may give the freed top of its heap back to
    the kernel, and the next step faults it in again page by page: 81,889 faults here on this project's
    machine, but whether it trims depends on what else lives on the heap (one clean CI clone kept the memory
    by itself), so only the kept case is asserted; the thresholds themselves are checked below."""
    import subprocess
    import sys
    code = """
import resource, torch
from trainer.runtime import keep_freed_memory
keep_freed_memory()
def step():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    acts = [torch.ones(4 << 20) for _ in range(20)]
    del acts
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
step(); step(); print(step())"""
    faults = [int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
              for _ in range(3)]
    assert max(faults) <= 2 * 4096, faults  # measured: 0 or 4096


def test_keep_freed_memory_raises_both_glibc_thresholds(monkeypatch):
    import ctypes

    import trainer.runtime as runtime
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    runtime.keep_freed_memory()
    assert sorted(calls) == [(-3, 32 << 20), (-1, 1 << 30)]  # M_MMAP_THRESHOLD at glibc's maximum, M_TRIM_THRESHOLD 1 GiB


def test_cpu_runs_start_the_allocator_setting_and_a_fused_optimizer(monkeypatch):
    import trainer.runtime as runtime
    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1))
    cfg = preset("tiny")
    runtime.Runtime(cfg, -1)
    assert calls == [1]
    opt, _ = train_mod.make_optimizer(build_model(cfg.model), cfg)
    assert opt.defaults["fused"] is True
