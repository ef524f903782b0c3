"""Synthetic length-generalization tasks as a task kind of the trainer: generators, reparams, the
scalar objective and its regularizer, training through trainer.train, evaluation, errors."""
import json

import pytest
import torch

from trainer.config import preset
from trainer.errors import OLHError
from trainer.models import build_model
from trainer.models.scalar import BOS
from trainer.synthetic.objective import SCALAR_DIVERGENCES, ScalarObjective, check, draw_extra, evaluate
from trainer.synthetic.reparam import REPARAMS
from trainer.synthetic.tasks import TASKS, BitSampler, eval_generator, sample_bits, sample_length, target_stats
from trainer.train import main as train_main
from trainer.train import train

torch.set_num_threads(1)


def tiny_cfg(tmp_path=None, **over):
    cfg = preset("synthetic")
    base = dict(d_model=16, n_layer=1, n_head=2, mlp_ratio=2, max_steps=80, batch_size=32, lr=3e-3,
                warmup_steps=5, eval_samples=16, test_len=14, seq_len=6, max_positions=15, log_every=1000)
    for k, v in {**base, **over}.items():
        cfg.set(k, v)
    if tmp_path is not None:
        cfg.train.out = str(tmp_path / "run")
    return cfg


def losses(run_dir) -> list[float]:
    return [json.loads(x)["mse"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


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


def test_bit_sampler_is_seeded_and_resumable():
    a = BitSampler(4, 1, 10, seed=0)
    first = [a.next_batch() for _ in range(5)]
    state = a.state_dict()
    rest = [a.next_batch() for _ in range(3)]
    b = BitSampler(4, 1, 10, seed=0)
    b.load_state_dict(json.loads(json.dumps(state)))  # the state travels through trainer_state.json
    assert all(torch.equal(x, y) for x, y in zip(rest, [b.next_batch() for _ in range(3)]))
    assert {x.shape[1] for x in first + rest} <= set(range(1, 11)) and len({x.shape[1] for x in first + rest}) > 1
    other = BitSampler(4, 1, 10, seed=1)
    assert not all(torch.equal(x, other.next_batch()) for x in first)


def test_task_targets():
    bits = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]])
    assert TASKS.get("mean").target(bits).tolist() == [0.75, 0.0]
    assert TASKS.get("length").target(bits).tolist() == [4.0, 4.0]
    with pytest.raises(OLHError, match="unknown synthetic task 'parity'; valid: mean, length"):
        TASKS.get("parity")


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
        check(tiny_cfg(task="mean", reparam="log"))
    check(tiny_cfg(task="mean", reparam="sqrt"))  # mean in [0, 1] is fine for sqrt


def test_target_stats_standardize():
    mu, sd = target_stats("length", "identity", 1, 10, "standardize")
    assert mu == pytest.approx(5.5) and sd == pytest.approx(2.87, abs=0.01)
    assert target_stats("length", "sqrt", 1, 10, "none") == (0.0, 1.0)


# ---- model, objective, regularizer ---------------------------------------------------------------


@pytest.mark.parametrize("arch,pool", [("decoder", "last"), ("encdec", "mean"), ("rnn", "last")])
def test_scalar_head_on_every_family(arch, pool):
    torch.manual_seed(0)
    m = build_model(tiny_cfg(arch=arch).model)
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


def test_regularized_loss_is_fit_plus_alpha_times_the_view_divergence():
    """loss = mean(MSE(long), MSE(short)) + alpha * mean((y(x) - y(x[e:]))^2), recomputed by hand with
    the same e: dropping the term, scoring another view or another divergence changes the number."""
    cfg = tiny_cfg(task="length", alpha=0.7, pe="learned")  # positions make the two views differ at init
    torch.manual_seed(0)
    model, obj = build_model(cfg.model), ScalarObjective(cfg)
    bits = torch.randint(0, 2, (16, 9), generator=torch.Generator().manual_seed(1))
    loss, m = obj(model, bits, 0, torch.Generator().manual_seed(2))
    e = draw_extra(torch.Generator().manual_seed(2), 9, cfg.align.extra_frac)
    assert m["l_extra"] == e >= 1
    z = lambda b: (b.shape[1] - obj.mu) / obj.sigma  # noqa: E731 - length targets, standardized
    yl, ys = model(bits), model(bits[:, e:])
    fit = 0.5 * ((yl - z(bits)).pow(2).mean() + (ys - z(bits[:, e:])).pow(2).mean())
    mis = (yl - ys).pow(2).mean()
    assert mis.item() > 1e-2 and m["mis"] == pytest.approx(mis.item(), rel=1e-5)
    assert loss.item() == pytest.approx((fit + 0.7 * mis).item(), rel=1e-5)
    plain, pm = ScalarObjective(tiny_cfg(task="length", alpha=0.0))(model, bits, 0, torch.Generator())
    assert "mis" not in pm and plain.item() == pytest.approx((yl - z(bits)).pow(2).mean().item(), rel=1e-5)


def test_regularizer_makes_outputs_length_invariant(tmp_path):
    """Trained with a strong alpha, the outputs for x and its suffix x[e:] move together; the
    compute-matched run (both views, alpha = 0) keeps them apart (it fits the different targets)."""
    gaps = {}
    for alpha in (0.0, 3.0):
        cfg = tiny_cfg(tmp_path / f"a{alpha}", task="length", alpha=alpha, pair_windows=True, max_steps=60)
        train(cfg)
        from trainer.checkpoint import load_model
        model = load_model(cfg.train.out)[0]
        bits = sample_bits(torch.Generator().manual_seed(9), 64, 6)
        with torch.no_grad():
            gaps[alpha] = (model(bits) - model(bits[:, 3:])).pow(2).mean().item()
    assert gaps[3.0] < 0.25 * gaps[0.0], gaps


# ---- training and evaluation through the trainer -------------------------------------------------


def test_training_is_deterministic(tmp_path):
    train(tiny_cfg(tmp_path / "a", max_steps=6))
    train(tiny_cfg(tmp_path / "b", max_steps=6))
    train(tiny_cfg(tmp_path / "c", max_steps=6, seed=1))
    assert losses(tmp_path / "a" / "run") == losses(tmp_path / "b" / "run") != losses(tmp_path / "c" / "run")


@pytest.mark.parametrize("task,arch", [("mean", "decoder"), ("length", "decoder"), ("mean", "encdec"),
                                       ("length", "rnn")])
def test_tiny_run_lowers_loss(tmp_path, task, arch):
    train(tiny_cfg(tmp_path, task=task, arch=arch))
    ls = losses(tmp_path / "run")
    assert sum(ls[-8:]) / 8 < 0.5 * sum(ls[:8]) / 8


def test_evaluation_covers_every_test_length(tmp_path):
    cfg = tiny_cfg(tmp_path, task="length", reparam="sqrt", max_steps=10)
    train(cfg)
    from trainer.checkpoint import load_model
    model, saved, tok = load_model(cfg.train.out)
    assert tok is None and saved.data.reparam == "sqrt"
    ev = evaluate(model, saved)
    assert sorted(k for k in ev if k.startswith("mse@")) == sorted(f"mse@{n}" for n in range(1, 15))
    assert all(0.0 <= ev[f"clamped@{n}"] <= 1.0 for n in range(1, 15))
    assert ev["mse_train"] == pytest.approx(sum(ev[f"mse@{n}"] for n in range(1, 7)) / 6)
    assert evaluate(model, saved) == ev  # the test sets are fixed


def test_resume_continues_exactly(tmp_path):
    full = tiny_cfg(tmp_path / "full", max_steps=8, save_every=4)
    train(full)
    part = tiny_cfg(tmp_path / "part", max_steps=8)
    train(part, stop_at=4)
    part.train.resume = True
    train(part)
    assert losses(tmp_path / "full" / "run") == losses(tmp_path / "part" / "run")


@pytest.mark.parametrize("argv,message", [
    (["--reparam", "bogus"], "error: unknown reparam 'bogus'; valid: identity, sqrt, log, inv_sqrt, square, cube"),
    (["--task", "mean", "--reparam", "inv_sqrt"], "error: reparam inv_sqrt: forward needs x > 0, got 0"),
    (["--task", "parity"], "error: unknown task 'parity'; valid: lm, mean, length"),
    (["--min_len", "5", "--seq_len", "2"], "error: need 1 <= min_len <= seq_len"),
    (["--max_steps", "x"], "error: --max_steps expects int, got 'x'"),
    (["--divergence", "sce"], "error: unknown scalar divergence 'sce'; valid: l2, l1"),
    (["--head", "lm"], "error: --task length predicts a number: it needs --head scalar"),
    (["--pe", "learned", "--max_positions", "20"], "error: max_positions=20 is shorter than the longest test input"),
])
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path):
    assert train_main(["--preset", "synthetic", "--max_steps", "2"] + argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
