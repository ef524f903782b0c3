"""Alignment axes: divergences vs hand computations, scopes, views, schedules, every combination."""
import itertools
import math

import numpy as np
import pytest
import torch

from tests.helpers import metrics, train_tiny
from trainer.alignment import DIVERGENCES, SCHEDULES, SCOPES, TARGETS, Objective, alpha_at, build_divergence
from trainer.alignment.views import CausalViews
from trainer.config import preset
from trainer.errors import OLHError
from trainer.models import build_model


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


A = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
B = np.array([[1.0, 1.0, 0.0], [-2.0, 1.0, 0.5]])
p, q = np_softmax(A), np_softmax(B)
HAND = {
    "sce": -(p * np.log(q)).sum(-1) - (q * np.log(p)).sum(-1),
    "kl": (p * np.log(p / q)).sum(-1),
    "sym_kl": (p * np.log(p / q)).sum(-1) + (q * np.log(q / p)).sum(-1),
    "js": 0.5 * (p * np.log(2 * p / (p + q))).sum(-1) + 0.5 * (q * np.log(2 * q / (p + q))).sum(-1),
    "l2": ((p - q) ** 2).sum(-1),
}


@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_divergence_hand_computation(name):
    got = DIVERGENCES.get(name)(torch.tensor(A), torch.tensor(B)).numpy()
    np.testing.assert_allclose(got, HAND[name], rtol=1e-5)


def test_kl_direction_option():
    a, b = torch.tensor(A), torch.tensor(B)
    rev = build_divergence("kl", "short_long")(a, b).numpy()
    np.testing.assert_allclose(rev, (q * np.log(q / p)).sum(-1), rtol=1e-5)
    with pytest.raises(OLHError, match="valid: long_short, short_long"):
        build_divergence("kl", "sideways")


@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_divergence_properties(name):
    torch.manual_seed(0)
    a, b = torch.randn(50, 11) * 3, torch.randn(50, 11) * 3
    f = DIVERGENCES.get(name)
    d_ab, d_ba = f(a, b), f(b, a)
    assert torch.all(d_ab >= -1e-6)
    same = f(a, a)
    if name == "sce":  # SCE(p, p) = 2 H(p): zero only for one-hot p
        h = -(a.softmax(-1) * a.log_softmax(-1)).sum(-1)
        torch.testing.assert_close(same, 2 * h, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(same, torch.zeros(50), atol=1e-6, rtol=0)
    if name != "kl":
        torch.testing.assert_close(d_ab, d_ba, atol=1e-5, rtol=1e-5)
    if name == "js":
        assert torch.all(d_ab <= math.log(2) + 1e-6)


@pytest.mark.parametrize("name", DIVERGENCES.names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_divergence_finite_under_extreme_logits(name, dtype):
    a = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=dtype, requires_grad=True)
    b = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4]], dtype=dtype)
    d = DIVERGENCES.get(name)(a, b)
    assert torch.all(torch.isfinite(d))
    d.sum().backward()
    assert torch.all(torch.isfinite(a.grad.float()))


def test_scopes_pick_intended_positions():
    assert SCOPES.get("all")(5).tolist() == [0, 1, 2, 3, 4]
    assert SCOPES.get("last")(5).tolist() == [4]
    assert SCOPES.get("first")(5).tolist() == [0]
    assert SCOPES.get("first_frac:0.1")(30).tolist() == [0, 1, 2]
    assert SCOPES.get("first_frac:0.1")(5).tolist() == [0]  # at least one
    assert SCOPES.get("first_frac:0.5")(5).tolist() == [0, 1, 2]
    with pytest.raises(OLHError, match=r"fraction must be in \(0, 1\]"):
        SCOPES.get("first_frac:1.5")
    with pytest.raises(OLHError, match="unknown scope 'first_frac'"):
        SCOPES.get("first_frac")


def test_causal_windows_overlap_on_the_same_absolute_tokens():
    L, E = 16, 8
    seq = torch.arange(100, 100 + L + E)[None]  # token value = absolute position + 100
    v = CausalViews(L, 0, 1)
    for e in range(1, E + 1):
        A, B = seq[:, :L], seq[:, e:e + L]
        n, off_long, off_short = v.overlap(e)
        for i in range(n):
            assert A[0, off_long + i] == B[0, off_short + i]
            if off_long + i + 1 < L:  # the next token each view predicts there is the same too
                assert A[0, off_long + i + 1] == B[0, off_short + i + 1]


class Recorder(torch.nn.Module):
    """Wraps a model and records the inputs of each forward call."""

    def __init__(self, m):
        super().__init__()
        self.m, self.calls, self.kind = m, [], m.kind

    def forward(self, *args, **kw):
        self.calls.append([a.clone() for a in args if a is not None])
        return self.m(*args, **kw)


def objective_for(arch, **over):
    cfg = preset("tiny")
    cfg.model.arch = arch
    for k, v in over.items():
        cfg.set(k, v)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    return cfg, model, Objective(cfg, model.kind, bos_id=1)


@pytest.mark.parametrize("arch", ["decoder", "encdec", "rnn"])
def test_views_seen_by_the_model(arch):
    cfg, model, obj = objective_for(arch, alpha=0.1)
    rec = Recorder(model)
    L, m = cfg.data.seq_len, cfg.data.tgt_len
    seq = torch.arange(obj.window)[None].repeat(2, 1)
    gen = torch.Generator().manual_seed(3)
    _, met = obj(rec, seq, 0, gen)
    e = met["l_extra"]
    assert 1 <= e <= obj.extra_max == int(0.5 * L)
    (long_in, short_in) = rec.calls
    if arch == "encdec":
        assert obj.window == L + m
        assert torch.equal(long_in[0], seq[:, :L]) and torch.equal(short_in[0], seq[:, e:L])
        assert torch.equal(long_in[1], short_in[1])  # the same decoder input (BOS + y[:-1])
        assert long_in[1][0, 0] == 1 and torch.equal(long_in[1][0, 1:], seq[0, L:L + m - 1])
    else:
        assert obj.window == L + obj.extra_max
        assert torch.equal(long_in[0], seq[:, :L]) and torch.equal(short_in[0], seq[:, e:e + L])


@pytest.mark.parametrize("arch", ["decoder", "encdec", "rnn"])
def test_alpha_zero_runs_exactly_one_plain_forward(arch):
    cfg, model, obj = objective_for(arch, alpha=0.0)
    rec = Recorder(model)
    assert not obj.two_branch and obj.extra_max == 0
    loss, met = obj(rec, torch.randint(0, 500, (2, obj.window)), 0, torch.Generator())
    assert len(rec.calls) == 1 and "mis" not in met and "fwd_ms_short" not in met
    cfg, model, obj = objective_for(arch, alpha=0.0, pair_windows=True)  # compute-matched baseline
    rec = Recorder(model)
    _, met = obj(rec, torch.randint(0, 500, (2, obj.window)), 0, torch.Generator().manual_seed(0))
    assert len(rec.calls) == 2 and "mis" not in met and "l_extra" in met


def test_scope_selects_those_positions_in_the_loss():
    """The misalignment with scope=last equals D at the last overlap position computed by hand."""
    cfg, model, obj = objective_for("decoder", alpha=1.0, scope="last")
    seq = torch.randint(0, 500, (2, obj.window))
    gen = torch.Generator().manual_seed(5)
    _, met = obj(model, seq, 0, gen)
    e, L = met["l_extra"], cfg.data.seq_len
    za, zb = model(seq[:, :L]), model(seq[:, e:e + L])
    hand = DIVERGENCES.get("sce")(za[:, L - 1], zb[:, L - e - 1]).mean().item()
    assert met["mis"] == pytest.approx(hand, rel=1e-5)
    cfg, model, obj = objective_for("decoder", alpha=1.0, scope="first")
    _, met = obj(model, seq, 0, torch.Generator().manual_seed(5))
    za, zb = model(seq[:, :L]), model(seq[:, e:e + L])
    assert met["mis"] == pytest.approx(DIVERGENCES.get("sce")(za[:, e], zb[:, 0]).mean().item(), rel=1e-5)


def test_detach_long_stops_gradient_of_the_long_branch_only():
    cfg, model, obj = objective_for("decoder", alpha=1.0, detach_long=True)
    seq = torch.randint(0, 500, (2, obj.window))
    # with detach_long the misalignment gradient reaches the parameters only through the short view
    loss, met = obj(model, seq, 0, torch.Generator().manual_seed(1))
    assert loss.requires_grad and math.isfinite(met["mis"])


def test_schedules():
    a = preset("tiny").align
    a.alpha, a.alpha_start, a.alpha_warmup = 0.4, 0.0, 10
    assert alpha_at(5, 100, a, 32) == pytest.approx(0.4)
    a.alpha_schedule = "linear"
    assert [alpha_at(s, 100, a, 32) for s in (0, 50, 100, 200)] == pytest.approx([0, 0.2, 0.4, 0.4])
    a.alpha_schedule = "cosine"
    assert [alpha_at(s, 100, a, 32) for s in (0, 50, 100)] == pytest.approx([0, 0.2, 0.4])
    a.alpha_schedule = "warmup"
    assert [alpha_at(s, 100, a, 32) for s in (0, 5, 10, 90)] == pytest.approx([0, 0.2, 0.4, 0.4])
    a.alpha_schedule, a.alpha_milestones = "step", "10:0.2,20:0.05"
    assert [alpha_at(s, 100, a, 32) for s in (0, 9, 10, 19, 20, 99)] == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.05, 0.05])
    a.alpha_milestones = "ten:0.2"
    with pytest.raises(OLHError, match="expected 'STEP:ALPHA,STEP:ALPHA'"):
        alpha_at(0, 100, a, 32)
    a.alpha_schedule, a.alpha_len_p, a.l_test = "constant", 0.5, 128
    assert alpha_at(0, 100, a, 32) == pytest.approx(0.4 * (128 / 32) ** 0.5)
    a.l_test = 0  # default l_test = 4 * seq_len
    assert alpha_at(0, 100, a, 32) == pytest.approx(0.8)
    assert SCHEDULES.names() == ["constant", "linear", "cosine", "warmup", "step"]


def test_hidden_layers_validation():
    cfg, model, obj = objective_for("decoder", alpha=0.1, target="hidden", hidden_layers="5")
    with pytest.raises(OLHError, match="the model has 2 layers"):
        obj(model, torch.randint(0, 500, (2, obj.window)), 0, torch.Generator())


COMBOS = list(itertools.product(["decoder", "encdec", "rnn"], DIVERGENCES.names(),
                                ["all", "last", "first", "first_frac:0.1"], TARGETS.names()))


@pytest.mark.parametrize("arch,div,scope,target", COMBOS)
def test_every_combination_trains_with_finite_loss(arch, div, scope, target):
    cfg, model, obj = objective_for(arch, alpha=0.3, divergence=div, scope=scope, target=target,
                                    hidden_layers="0,-1")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        seq = torch.randint(0, cfg.model.vocab_size, (2, obj.window), generator=g)
        loss, met = obj(model, seq, step, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert math.isfinite(loss.item()) and math.isfinite(met["mis"]) and met["mis"] >= -1e-6


def test_alignment_through_the_trainer_logs_every_field(tmp_path):
    rows = metrics(train_tiny(tmp_path / "r", max_steps=4, alpha_schedule="warmup", alpha_warmup=2))
    for r in rows:
        for k in ("loss", "lm_loss", "mis", "alpha", "l_extra", "fwd_ms_long", "fwd_ms_short", "lr",
                  "tokens_per_s", "step_ms"):
            assert k in r, k
    assert [r["alpha"] for r in rows] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    assert rows[0]["loss"] == pytest.approx(rows[0]["lm_loss"])  # alpha 0 at step 0
