"""Synthetic length-generalization suite (issue 7): generators, reparams, training, rows, CLI."""
import csv
import dataclasses
import json

import pytest
import torch

from trainer.config import ModelConfig
from trainer.errors import OLHError
from trainer.synthetic.model import BOS, ScalarModel
from trainer.synthetic.regularizer import SCALAR_DIVERGENCES, draw_extra
from trainer.synthetic.reparam import REPARAMS
from trainer.synthetic.run import (EXTRA_KEYS, NO_PE, ROW_KEYS, SyntheticConfig, expand_grid, main, run_grid,
                                   run_job, summary_table, target_stats, train_job)
from trainer.synthetic.tasks import TASKS, eval_generator, sample_bits, sample_length

torch.set_num_threads(1)

TINY_MODEL = dataclasses.replace(ModelConfig(), arch="decoder", pe="nope", d_model=16, n_layer=1, n_head=2,
                                 mlp_ratio=2)


def tiny_cfg(**over) -> SyntheticConfig:
    base = dict(max_steps=80, batch_size=32, lr=3e-3, warmup_steps=5, seeds=1, eval_samples=16,
                test_max_len=14, train_max_len=6)
    return SyntheticConfig(**{**base, **over})


def one_job(task="mean", arch="decoder", pe="nope", reparam="identity", cfg=None, seed=0):
    cfg = cfg or tiny_cfg()
    model = dataclasses.replace(TINY_MODEL, arch=arch, pe=pe)
    jobs = expand_grid(model, dataclasses.replace(cfg, task=task, reparam=reparam, seed=seed))
    assert len(jobs) == 1
    return jobs[0], cfg


# ---- generators ----------------------------------------------------------------------------------


def test_generators_are_seeded_and_deterministic():
    a = sample_bits(torch.Generator().manual_seed(3), 8, 12)
    b = sample_bits(torch.Generator().manual_seed(3), 8, 12)
    c = sample_bits(torch.Generator().manual_seed(4), 8, 12)
    assert a.shape == (8, 12) and a.dtype == torch.int64 and set(a.unique().tolist()) <= {0, 1}
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ls = [sample_length(g1, 1, 10) for _ in range(400)]
    assert ls == [sample_length(g2, 1, 10) for _ in range(400)]
    assert set(ls) == set(range(1, 11))  # inclusive range, every length drawn
    # the test set of a length depends only on (eval_seed, length)
    assert torch.equal(sample_bits(eval_generator(1, 7), 4, 7), sample_bits(eval_generator(1, 7), 4, 7))
    assert not torch.equal(sample_bits(eval_generator(1, 7), 4, 7), sample_bits(eval_generator(2, 7), 4, 7))


def test_task_targets():
    bits = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]])
    assert TASKS.get("mean").target(bits).tolist() == [0.75, 0.0]
    assert TASKS.get("length").target(bits).tolist() == [4.0, 4.0]
    with pytest.raises(OLHError, match="unknown synthetic task 'parity'; valid: mean, length"):
        TASKS.get("parity")


def test_training_is_deterministic():
    job, cfg = one_job(cfg=tiny_cfg(max_steps=6))
    _, a = train_job(job, cfg)
    _, b = train_job(job, cfg)
    assert a["losses"] == b["losses"]
    job2, _ = one_job(cfg=tiny_cfg(max_steps=6), seed=1)
    assert train_job(job2, cfg)[1]["losses"] != a["losses"]


# ---- reparams ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REPARAMS.names())
def test_reparam_round_trip(name):
    r = REPARAMS.get(name)
    lengths = torch.arange(1, 201, dtype=torch.float64)
    y = r.forward(lengths)
    assert torch.allclose(r.inverse(y), lengths, rtol=1e-10, atol=0)
    back, clamped = r.to_target(y)  # predictions inside the domain are never touched
    assert torch.allclose(back, lengths, rtol=1e-10, atol=0) and not clamped.any()


def test_reparam_registry_has_paper_and_ablation_entries():
    assert REPARAMS.names() == ["identity", "sqrt", "log", "inv_sqrt", "square", "cube"]
    with pytest.raises(OLHError, match="unknown reparam 'exp'; valid: identity, sqrt, log, inv_sqrt"):
        REPARAMS.get("exp")


@pytest.mark.parametrize("name,call,value,message", [
    ("sqrt", "inverse", -0.3, "reparam sqrt: inverse needs y >= 0, got -0.3"),
    ("inv_sqrt", "inverse", 0.0, "reparam inv_sqrt: inverse needs y > 0, got 0"),
    ("square", "inverse", -2.0, "reparam square: inverse needs y >= 0, got -2"),
    ("log", "forward", 0.0, "reparam log: forward needs x > 0, got 0"),
    ("sqrt", "forward", -1.0, "reparam sqrt: forward needs x >= 0, got -1"),
    ("inv_sqrt", "forward", float("nan"), "reparam inv_sqrt: forward needs x > 0, got nan"),
])
def test_reparam_rejects_invalid_values(name, call, value, message):
    r = REPARAMS.get(name)
    with pytest.raises(OLHError) as e:
        getattr(r, call)(torch.tensor([2.0, value]))
    assert str(e.value) == message


def test_reparam_prediction_clamping():
    back, clamped = REPARAMS.get("sqrt").to_target(torch.tensor([-0.3, 2.0]))
    assert back.tolist() == [0.0, 4.0] and clamped.tolist() == [True, False]
    back, clamped = REPARAMS.get("inv_sqrt").to_target(torch.tensor([-1.0, 0.5]))
    assert back[0] == pytest.approx(1e6) and back[1] == pytest.approx(4.0) and clamped.tolist() == [True, False]
    back, clamped = REPARAMS.get("cube").to_target(torch.tensor([-8.0]))  # cube is defined everywhere
    assert back.tolist() == [pytest.approx(-2.0)] and not clamped.any()
    assert torch.isfinite(REPARAMS.get("log").to_target(torch.tensor([1e4]))[0]).all()


def test_reparam_must_fit_the_task():
    with pytest.raises(OLHError, match="reparam log: forward needs x > 0, got 0.*cannot be used with --task mean"):
        expand_grid(TINY_MODEL, tiny_cfg(task="mean", reparam="log"))
    expand_grid(TINY_MODEL, tiny_cfg(task="mean", reparam="sqrt"))  # mean in [0, 1] is fine for sqrt


def test_target_stats_standardize():
    mu, sd = target_stats("length", "identity", tiny_cfg(train_min_len=1, train_max_len=10))
    assert mu == pytest.approx(5.5) and sd == pytest.approx(2.87, abs=0.01)
    assert target_stats("length", "sqrt", tiny_cfg(target_norm="none")) == (0.0, 1.0)


# ---- grid, model, regularizer --------------------------------------------------------------------


def test_expand_grid():
    cfg = tiny_cfg(task="mean,length", reparam="identity", seeds=2)
    jobs = expand_grid(dataclasses.replace(TINY_MODEL, arch="decoder,rnn", pe="all"), cfg)
    # decoder: 5 PEs; rnn ignores --pe (one point, pe "-"); x 2 tasks x 2 seeds
    assert len(jobs) == (5 + 1) * 2 * 2
    assert {j.pe for j in jobs if j.arch == "rnn"} == {NO_PE}
    assert all(j.model.max_positions == cfg.test_max_len + 1 for j in jobs)  # BOS + longest test
    with pytest.raises(OLHError, match="unknown positional encoding 'xpos'"):
        expand_grid(dataclasses.replace(TINY_MODEL, pe="nope,xpos"), cfg)


@pytest.mark.parametrize("arch,pool", [("decoder", "last"), ("encdec", "mean"), ("rnn", "last")])
def test_scalar_model_interface(arch, pool):
    torch.manual_seed(0)
    m = ScalarModel(dataclasses.replace(TINY_MODEL, arch=arch, vocab_size=3), pool="auto")
    assert m.pool == pool
    bits = torch.randint(0, 2, (3, 5))
    assert m.tokens(bits)[:, 0].tolist() == [BOS] * 3 and m(bits).shape == (3,)


def test_draw_extra_and_divergences():
    g = torch.Generator().manual_seed(0)
    assert draw_extra(g, 1, 0.5) == 0
    es = {draw_extra(g, 10, 0.5) for _ in range(200)}
    assert es == {1, 2, 3, 4, 5}
    assert {draw_extra(g, 3, 1.0) for _ in range(100)} <= {1, 2}  # the short view keeps >= 1 bit
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    assert SCALAR_DIVERGENCES.get("l2")(a, b).tolist() == [0.25, 9.0]
    assert SCALAR_DIVERGENCES.get("l1")(a, a).tolist() == [0.0, 0.0]


# ---- training and evaluation ---------------------------------------------------------------------


@pytest.mark.parametrize("task,arch", [("mean", "decoder"), ("length", "decoder"), ("mean", "encdec"),
                                       ("length", "rnn")])
def test_tiny_run_lowers_loss(task, arch):
    job, cfg = one_job(task=task, arch=arch)
    _, info = train_job(job, cfg)
    assert info["final_loss"] < 0.5 * info["first_loss"], info


def test_regularized_run():
    job, cfg = one_job(task="mean", cfg=tiny_cfg(alpha=0.5, max_steps=30))
    _, info = train_job(job, cfg)
    assert info["mis"] is not None and info["mis"] >= 0 and info["final_loss"] < info["first_loss"]
    _, plain = train_job(job, tiny_cfg(max_steps=30))
    assert plain["mis"] is None  # alpha = 0: one view, no misalignment term


def test_evaluation_rows_schema():
    job, cfg = one_job(task="length", reparam="sqrt", cfg=tiny_cfg(max_steps=10, test_min_len=2))
    rows, info = run_job(job, cfg)
    assert [r["length"] for r in rows] == list(range(2, cfg.test_max_len + 1))
    for r in rows:
        assert tuple(r)[:len(ROW_KEYS)] == ROW_KEYS and set(r) == set(ROW_KEYS) | set(EXTRA_KEYS)
        assert (r["task"], r["arch"], r["pe"], r["reparam"], r["seed"]) == ("length", "decoder", "nope", "sqrt", 0)
        assert isinstance(r["length"], int) and isinstance(r["mse"], float) and r["mse"] >= 0
        assert 0.0 <= r["clamped"] <= 1.0
    table = summary_table(rows, dataclasses.replace(cfg, report_lengths="10,99"))
    assert "MSE l=10" in table and "l=99" not in table  # lengths outside the test range are dropped


def test_workers_match_serial():
    cfg = tiny_cfg(max_steps=5, test_max_len=6)
    jobs = expand_grid(dataclasses.replace(TINY_MODEL, pe="nope,alibi"), cfg)
    serial, _ = run_grid(jobs, cfg, log=lambda *_: None)
    parallel, _ = run_grid(jobs, dataclasses.replace(cfg, workers=2), log=lambda *_: None)
    assert serial == parallel


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_writes_results_and_plots(tmp_path, capsys):
    out = tmp_path / "syn"
    rc = main(["--task", "mean,length", "--pe", "nope,rope", "--seeds", "2", "--max_steps", "4",
               "--d_model", "16", "--n_layer", "1", "--n_head", "2", "--test_max_len", "12",
               "--eval_samples", "8", "--out", str(out)])
    assert rc == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(ROW_KEYS) + list(EXTRA_KEYS)
    assert len(rows) == 2 * 2 * 2 * 12  # tasks x pes x seeds x lengths
    jl = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(jl) == len(rows) and jl[0]["mse"] == pytest.approx(float(rows[0]["mse"]))
    for name in ("mean.png", "length.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    assert "| mean | decoder | rope | identity | 2 |" in summary
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["synthetic"]["seeds"] == 2 and cfg["model"]["d_model"] == 16 and "torch" in cfg["versions"]
    assert len((out / "runs.jsonl").read_text().splitlines()) == 8


@pytest.mark.parametrize("argv,message", [
    (["--reparam", "bogus"], "error: unknown reparam 'bogus'; valid: identity, sqrt, log, inv_sqrt, square, cube"),
    (["--task", "mean", "--reparam", "inv_sqrt"], "error: reparam inv_sqrt: forward needs x > 0, got 0"),
    (["--paper", "--pe", "rope"], "error: --paper fixes the grid; drop --pe"),
    (["--train_min_len", "5", "--train_max_len", "2"], "error: need 1 <= train_min_len <= train_max_len"),
    (["--max_steps", "x"], "error: --max_steps expects int, got 'x'"),
    (["--divergence", "sce"], "error: unknown scalar divergence 'sce'; valid: l2, l1"),
])
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
