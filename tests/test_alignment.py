"""Alignment axes: divergences vs hand computations, scopes, views, schedules, every combination."""
import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import metrics, train_tiny
from trainer.alignment import DIVERGENCES, PAIRINGS, SCHEDULES, SCOPES, TARGETS, Objective, alpha_at, build_divergence
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
    on_logits = build_divergence(name)(torch.tensor(A), torch.tensor(B)).numpy()
    on_logp = DIVERGENCES.get(name)(torch.tensor(A).log_softmax(-1), torch.tensor(B).log_softmax(-1)).numpy()
    np.testing.assert_allclose(on_logits, HAND[name], rtol=1e-5)
    np.testing.assert_allclose(on_logp, HAND[name], rtol=1e-5)


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
    f = build_divergence(name)
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
    d = build_divergence(name)(a, b)
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


# ---------------------------------------------------------------- an independent reference objective
# Written the plain way (two separate forward passes, F.cross_entropy on logits, float64 divergences,
# hand-written slices and scopes) so that the trainer's batched, shared-log-softmax objective is
# checked against something that does not share its code.
HAND_SLICES = {"offset": lambda L, e: ((0, L), (e, e + L)), "nested": lambda L, e: ((0, L), (e, L)),
               "prefix_suffix": lambda L, e: ((0, L + e), (e, L + e))}
HAND_SCOPES = {"all": lambda n: list(range(n)), "last": lambda n: [n - 1], "first": lambda n: [0],
               "first_frac:0.1": lambda n: list(range(max(1, math.ceil(0.1 * n))))}


def ref_div(name, za, zb, kl_direction="long_short"):
    lp, lq = za.double().log_softmax(-1), zb.double().log_softmax(-1)
    p_, q_ = lp.exp(), lq.exp()
    if name == "kl" and kl_direction == "short_long":
        lp, lq, p_, q_ = lq, lp, q_, p_
    lm = ((p_ + q_) / 2).log()
    return {"sce": -(p_ * lq).sum(-1) - (q_ * lp).sum(-1), "kl": (p_ * (lp - lq)).sum(-1),
            "sym_kl": (p_ * (lp - lq)).sum(-1) + (q_ * (lq - lp)).sum(-1),
            "js": 0.5 * (p_ * (lp - lm)).sum(-1) + 0.5 * (q_ * (lq - lm)).sum(-1),
            "l2": ((p_ - q_) ** 2).sum(-1)}[name]


def reference_loss(cfg, model, seq, e, detach_long=False):
    """(loss, lm, mis) of one step, computed independently of trainer/alignment."""
    a, L, m = cfg.align, cfg.data.seq_len, cfg.data.tgt_len
    (a0, a1), (b0, b1) = HAND_SLICES[a.pairing](L, e)
    hidden = a.target != "logits"
    if model.kind == "seq2seq":
        end = min(a1, b1)
        y = seq[:, end:end + m]
        dec = torch.cat([torch.ones_like(y[:, :1]), y[:, :-1]], 1)
        oa, ob = model(seq[:, a0:end], dec, return_hidden=hidden), model(seq[:, b0:end], dec, return_hidden=hidden)
        li = si = list(range(m))
    else:
        xa, xb = seq[:, a0:a1], seq[:, b0:b1]
        oa, ob = model(xa, return_hidden=hidden), model(xb, return_hidden=hidden)
        start = max(a0, b0)
        li, si = [t - a0 for t in range(start, min(a1, b1))], [t - b0 for t in range(start, min(a1, b1))]
    (za, ha), (zb, hb) = (oa if hidden else (oa, None)), (ob if hidden else (ob, None))
    if model.kind == "seq2seq":
        lm = 0.5 * (F.cross_entropy(za.reshape(-1, za.shape[-1]), y.reshape(-1))
                    + F.cross_entropy(zb.reshape(-1, zb.shape[-1]), y.reshape(-1)))
    else:
        lm = 0.5 * (F.cross_entropy(za[:, :-1].reshape(-1, za.shape[-1]), xa[:, 1:].reshape(-1))
                    + F.cross_entropy(zb[:, :-1].reshape(-1, zb.shape[-1]), xb[:, 1:].reshape(-1)))
    keep = HAND_SCOPES[a.scope](len(li))
    li, si = [li[k] for k in keep], [si[k] for k in keep]
    if detach_long:
        za, ha = za.detach(), [h.detach() for h in ha] if ha else ha
    terms = {}
    if a.target in ("logits", "hidden+logits"):
        terms["logits"] = ref_div(a.divergence, za[:, li], zb[:, si], a.kl_direction).mean()
    if hidden:
        layers = [int(x) for x in a.hidden_layers.split(",")]
        terms["hidden"] = torch.stack([((ha[i][:, li] - hb[i][:, si]).double() ** 2).mean(-1).mean()
                                       for i in layers]).mean()
    mis = terms.get("logits", 0) + (a.hidden_weight if a.target == "hidden+logits" else 1) * terms.get("hidden", 0)
    return lm + a.alpha * mis, lm, mis


def draw_e(obj, seed):
    return int(torch.randint(1, obj.extra_max + 1, (1,), generator=torch.Generator().manual_seed(seed)))


def test_every_pairing_overlaps_on_the_same_absolute_tokens():
    L, E = 16, 8
    seq = torch.arange(100, 100 + 2 * L + E)[None]  # token value = absolute position + 100
    v = CausalViews(L, 0, 1)
    for name in PAIRINGS.names():
        for e in range(1, E + 1):
            long_s, short_s = PAIRINGS.get(name)(L, e)
            (a0, a1), (b0, b1) = HAND_SLICES[name](L, e)
            assert (long_s.start, long_s.stop, short_s.start, short_s.stop) == (a0, a1, b0, b1)
            A, B = seq[:, long_s], seq[:, short_s]
            n, off_long, off_short = v.overlap(long_s, short_s)
            assert n == min(a1, b1) - max(a0, b0) and n >= 1
            assert torch.equal(A[0, off_long:off_long + n], B[0, off_short:off_short + n])
            assert off_long - off_short == b0 - a0  # the long view saw exactly e more tokens there


@pytest.mark.parametrize("arch", ["decoder", "encdec", "rnn"])
@pytest.mark.parametrize("pairing", ["offset", "nested", "prefix_suffix"])
def test_views_seen_by_the_model(arch, pairing):
    cfg, model, obj = objective_for(arch, alpha=0.1, pairing=pairing)
    rec = Recorder(model)
    L, m, E = cfg.data.seq_len, cfg.data.tgt_len, int(0.5 * cfg.data.seq_len)
    seq = torch.arange(obj.window)[None].repeat(2, 1)
    _, met = obj(rec, seq, 0, torch.Generator().manual_seed(3))
    e = met["l_extra"]
    assert 1 <= e <= obj.extra_max == E
    (a0, a1), (b0, b1) = HAND_SLICES[pairing](L, e)
    if arch == "encdec":
        end = min(a1, b1)
        assert obj.window == max(min(HAND_SLICES[pairing](L, x)[0][1], HAND_SLICES[pairing](L, x)[1][1])
                                 for x in range(1, E + 1)) + m
        (long_in, short_in) = rec.calls
        assert torch.equal(long_in[0], seq[:, a0:end]) and torch.equal(short_in[0], seq[:, b0:end])
        assert torch.equal(long_in[1], short_in[1])  # the same decoder input (BOS + y[:-1])
        assert long_in[1][0, 0] == 1 and torch.equal(long_in[1][0, 1:], seq[0, end:end + m - 1])
        return
    assert obj.window == {"offset": L + E, "nested": L, "prefix_suffix": L + E}[pairing]
    if pairing == "offset":  # equal lengths: one batched forward of [2B, L]
        (both,) = rec.calls
        assert torch.equal(both[0], torch.cat([seq[:, a0:a1], seq[:, b0:b1]]))
    else:
        (long_in, short_in) = rec.calls
        assert torch.equal(long_in[0], seq[:, a0:a1]) and torch.equal(short_in[0], seq[:, b0:b1])


@pytest.mark.parametrize("arch", ["decoder", "encdec", "rnn"])
def test_alpha_zero_runs_exactly_one_plain_forward(arch):
    cfg, model, obj = objective_for(arch, alpha=0.0)
    rec = Recorder(model)
    assert not obj.two_branch and obj.extra_max == 0
    seq = torch.randint(0, 500, (2, obj.window))
    loss, met = obj(rec, seq, 0, torch.Generator())
    assert len(rec.calls) == 1 and rec.calls[0][0].shape[0] == 2 and "mis" not in met
    L, m = cfg.data.seq_len, cfg.data.tgt_len
    if arch == "encdec":
        y = seq[:, L:L + m]
        z = model(seq[:, :L], torch.cat([torch.ones_like(y[:, :1]), y[:, :-1]], 1))
        want = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))
    else:
        z = model(seq[:, :L])
        want = F.cross_entropy(z[:, :-1].reshape(-1, z.shape[-1]), seq[:, 1:L].reshape(-1))
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    cfg, model, obj = objective_for(arch, alpha=0.0, pair_windows=True)  # compute-matched baseline
    rec = Recorder(model)
    _, met = obj(rec, torch.randint(0, 500, (2, obj.window)), 0, torch.Generator().manual_seed(0))
    rows = sum(c[0].shape[0] for c in rec.calls)
    assert rows == 4 and "mis" not in met and "l_extra" in met  # both views, no divergence


COMBOS = [(arch, div, scope, target) for arch, div, scope, target in itertools.product(
    ["decoder", "encdec", "rnn"], DIVERGENCES.names(), list(HAND_SCOPES), TARGETS.names())
    if target != "hidden" or div == "sce"]  # the hidden target uses no divergence


@pytest.mark.parametrize("arch,div,scope,target", COMBOS)
def test_every_combination_matches_the_reference(arch, div, scope, target):
    cfg, model, obj = objective_for(arch, alpha=0.3, divergence=div, scope=scope, target=target,
                                    hidden_layers="0,-1", hidden_weight=0.7)
    seq = torch.randint(0, cfg.model.vocab_size, (2, obj.window), generator=torch.Generator().manual_seed(1))
    loss, met = obj(model, seq, 0, torch.Generator().manual_seed(4))
    assert met["l_extra"] == draw_e(obj, 4)
    ref, ref_lm, ref_mis = reference_loss(cfg, model, seq, met["l_extra"])
    assert float(met["mis"]) == pytest.approx(float(ref_mis), rel=1e-5, abs=1e-6)
    assert float(met["lm_loss"]) == pytest.approx(float(ref_lm), rel=1e-6)
    assert float(loss) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize("arch", ["decoder", "encdec", "rnn"])
@pytest.mark.parametrize("pairing,kl_direction", [("nested", "long_short"), ("prefix_suffix", "long_short"),
                                                  ("offset", "short_long")])
def test_pairings_and_kl_direction_match_the_reference(arch, pairing, kl_direction):
    cfg, model, obj = objective_for(arch, alpha=0.5, pairing=pairing, divergence="kl", kl_direction=kl_direction)
    seq = torch.randint(0, cfg.model.vocab_size, (2, obj.window), generator=torch.Generator().manual_seed(2))
    loss, met = obj(model, seq, 0, torch.Generator().manual_seed(7))
    ref, _, ref_mis = reference_loss(cfg, model, seq, met["l_extra"])
    assert float(met["mis"]) == pytest.approx(float(ref_mis), rel=1e-5, abs=1e-6)
    assert float(loss) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize("arch", ["decoder", "encdec", "rnn"])
def test_batched_views_train_like_two_separate_passes(arch):
    """Five optimizer steps: the objective (one [2B, L] forward where it can) and the two-pass
    reference give the same per-step losses."""
    cfg, model, obj = objective_for(arch, alpha=0.1)
    ref_model = copy.deepcopy(model)
    opts = [torch.optim.AdamW(m.parameters(), lr=3e-3) for m in (model, ref_model)]
    gen, data = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    ours, theirs = [], []
    for step in range(5):
        seq = torch.randint(0, cfg.model.vocab_size, (4, obj.window), generator=data)
        loss, met = obj(model, seq, step, gen)
        ref = reference_loss(cfg, ref_model, seq, met["l_extra"])[0]
        for opt, x in zip(opts, (loss, ref)):
            opt.zero_grad()
            x.backward()
            opt.step()
        ours.append(float(loss))
        theirs.append(float(ref))
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_detach_long_stops_gradient_of_the_long_branch_only():
    cfg, model, obj = objective_for("decoder", alpha=1.0, detach_long=True)
    seq = torch.randint(0, 500, (2, obj.window), generator=torch.Generator().manual_seed(0))
    _, met = obj(model, seq, 0, torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(met["mis"], list(model.parameters()), allow_unused=True)
    want = torch.autograd.grad(reference_loss(cfg, model, seq, met["l_extra"], detach_long=True)[2],
                               list(model.parameters()), allow_unused=True)
    full = torch.autograd.grad(reference_loss(cfg, model, seq, met["l_extra"])[2],
                               list(model.parameters()), allow_unused=True)
    flat = lambda gs: torch.cat([g.flatten().double() for g in gs if g is not None])  # noqa: E731
    torch.testing.assert_close(flat(grads), flat(want), atol=1e-6, rtol=1e-4)
    assert (flat(full) - flat(want)).abs().max() > 100 * 1e-6  # the flag's effect dwarfs the tolerance


def test_a_new_pairing_is_one_registry_entry(tmp_path):
    """Registering a pairing is all it takes: the CLI, the objective and the loop pick it up."""
    @PAIRINGS.register("tail_half", help="short = the last half of long = w[0:L]")
    def tail_half(L, e):
        return slice(0, L), slice(L // 2, L)
    try:
        cfg, model, obj = objective_for("decoder", alpha=0.2, pairing="tail_half")
        rec = Recorder(model)
        seq = torch.arange(obj.window)[None]
        obj(rec, seq, 0, torch.Generator())
        assert obj.window == 32 and torch.equal(rec.calls[1][0], seq[:, 16:32])
        rows = metrics(train_tiny(tmp_path / "r", max_steps=2, pairing="tail_half"))
        assert len(rows) == 2 and rows[0]["mis"] > 0
    finally:
        PAIRINGS._entries.pop("tail_half")


def test_unknown_pairing_is_one_line_listing_the_valid_ones(tmp_path, capsys):
    from trainer.train import main
    assert main(["--preset", "tiny", "--out", str(tmp_path / "r"), "--pairing", "zigzag"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "error: unknown pairing 'zigzag'; valid: offset, nested, prefix_suffix"


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


def test_alignment_through_the_trainer_logs_every_field(tmp_path):
    rows = metrics(train_tiny(tmp_path / "r", max_steps=4, alpha_schedule="warmup", alpha_warmup=2))
    for r in rows:
        for k in ("loss", "lm_loss", "mis", "alpha", "l_extra", "lr", "tokens_per_s", "step_ms", "mfu"):
            assert k in r, k
    assert [r["alpha"] for r in rows] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    assert rows[0]["loss"] == pytest.approx(rows[0]["lm_loss"])  # alpha 0 at step 0


def test_help_lists_the_pairings_and_reporters():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "trainer.train", "--help"], capture_output=True, text=True).stdout
    for word in ("--pairing", "offset", "nested", "prefix_suffix", "--report_to", "tensorboard", "--grad_accum",
                 "--compile", "--peak_tflops"):
        assert word in out, word


def test_closed_form_divergence_gradients_equal_autograd():
    """`with_grads` (the aligned step's hot path, trainer/alignment/divergences.py) gives the value and both
    gradients autograd gives for the plain function."""
    g = torch.Generator().manual_seed(0)
    lp, lq = (torch.randn(3, 5, 40, generator=g).mul(4).log_softmax(-1) for _ in range(2))
    checked = 0
    for name in DIVERGENCES.names():
        fn = DIVERGENCES.get(name)
        if not hasattr(fn, "with_grads"):
            continue
        a, b = lp.clone().requires_grad_(), lq.clone().requires_grad_()
        want = fn(a, b)
        want.sum().backward()
        value, ga, gb = fn.with_grads(lp.clone(), lq.clone())
        assert torch.allclose(value, want.detach(), rtol=1e-6, atol=1e-5)
        assert torch.allclose(ga, a.grad, atol=1e-6) and torch.allclose(gb, b.grad, atol=1e-6)
        checked += 1
    assert checked >= 1  # sce


@pytest.mark.parametrize("arch", ["decoder", "rnn"])
def test_aligned_step_writes_one_full_size_gradient_of_the_log_probs(arch):
    """The LM losses and the logits term share one backward node, so the batched log-probabilities get one
    zero-filled gradient buffer, not one per term plus their sum (trainer/alignment/targets.py); the
    gradients equal those of the two terms computed apart."""
    from torch.profiler import profile
    cfg, model, obj = objective_for(arch, alpha=0.1)
    seq = torch.randint(0, cfg.model.vocab_size, (4, obj.window), generator=torch.Generator().manual_seed(0))
    loss, _ = obj(model, seq, 0, torch.Generator().manual_seed(1))
    full = (8, cfg.data.seq_len, cfg.model.vocab_size)
    with profile(record_shapes=True) as prof:
        loss.backward()
    fills = [e for e in prof.events() if e.name == "aten::fill_" and e.input_shapes and tuple(e.input_shapes[0]) == full]
    adds = [e for e in prof.events() if e.name == "aten::add_" and e.input_shapes and tuple(e.input_shapes[0]) == full]
    assert len(fills) == 1 and adds == []
    fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    run = obj.views.run  # the same objective with the LM losses taken by the views themselves
    obj.views.run = lambda *a, **kw: run(*a, **{**kw, "defer_lm": False})
    loss2, _ = obj(model, seq, 0, torch.Generator().manual_seed(1))
    loss2.backward()
    assert float(loss2) == float(loss)
    for a, b in zip(fused, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, rtol=0, atol=1e-7)
