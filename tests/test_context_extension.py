"""Context extension (issue 9): RoPE scaling is saved with the checkpoint and applied identically by the
trainer's model and by the `ol` lm-eval model."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from olharness.model import OLM
from tests.conftest_olh import olh_ckpts, olh_offline_env  # noqa: F401  (fixtures)
from trainer.checkpoint import load_model
from trainer.models import ROPE_SCALING

TEXT = "Anne Elliot had been forced into prudence in her youth, she learned romance as she grew older."


def scaled_copy(src, dst, method, scale=4.0, **model):
    shutil.copytree(src, dst)
    p = dst / "checkpoint/config.json"
    cfg = json.loads(p.read_text())
    cfg["model"].update(rope_scaling=method, rope_scale=scale, **model)
    p.write_text(json.dumps(cfg))
    return dst


def expected_rope(method: str, base: float, hd: int, s: float) -> tuple[torch.Tensor, float]:
    """(inv_freq, position divisor) of each method, written out from the papers' formulas in float64:
    PI divides positions by s; NTK-aware raises the base to base * s^(hd/(hd-2)); ABF (as configured
    here) to base * s^2."""
    b = {"none": base, "pi": base, "ntk": base * s ** (hd / (hd - 2)), "abf": base * s ** 2}[method]
    i = torch.arange(0, hd, 2, dtype=torch.float64)
    return (1.0 / b ** (i / hd)).float(), (s if method == "pi" else 1.0)


@pytest.mark.parametrize("method", ROPE_SCALING.names())
def test_ol_scores_a_scaled_checkpoint_exactly_as_the_trainer_model(olh_ckpts, tmp_path, method):
    run = scaled_copy(olh_ckpts["decoder"], tmp_path / "run", method)
    model, cfg, tok = load_model(run)  # what the trainer builds from this config
    assert cfg.model.rope_scaling == method
    lm = OLM(pretrained=str(run), device="cpu", batch_size=1)
    hd = cfg.model.d_model // cfg.model.n_head
    inv_freq, pos_scale = expected_rope(method, cfg.model.rope_base, hd, 4.0)
    for m in (model, lm.model):  # both loaders apply the method's formula, not just the same code
        assert m.pe.pos_scale == pos_scale
        torch.testing.assert_close(m.pe.inv_freq, inv_freq, rtol=1e-6, atol=0)
    ids = tok.encode(TEXT)
    with torch.no_grad():  # rolling log-likelihood = every token scored from EOS + all its left context
        logp = F.log_softmax(model(torch.tensor([[tok.eos_id] + ids[:-1]])).float(), -1)[0]
    direct = float(logp.gather(1, torch.tensor(ids)[:, None]).sum())
    (rolled,) = lm.loglikelihood_rolling([type("R", (), {"args": (TEXT,)})()], disable_tqdm=True)
    assert rolled == pytest.approx(direct, abs=1e-4)


def test_scaling_changes_long_positions_but_pi_keeps_relative_order(olh_ckpts, tmp_path):
    _, cfg, tok = load_model(olh_ckpts["decoder"])
    x = torch.tensor([tok.encode(TEXT)])
    outs = {}
    for m in ROPE_SCALING.names():
        run = scaled_copy(olh_ckpts["decoder"], tmp_path / m, m)
        model, _, _ = load_model(run)
        with torch.no_grad():
            outs[m] = model(x)
    hd = cfg.model.d_model // cfg.model.n_head
    for m, b in (("ntk", cfg.model.rope_base * 4.0 ** (hd / (hd - 2))), ("abf", cfg.model.rope_base * 16.0)):
        # a base-changing method computes exactly what plain RoPE with that base computes
        plain, _, _ = load_model(scaled_copy(olh_ckpts["decoder"], tmp_path / f"{m}-plain", "none", 1.0, rope_base=b))
        with torch.no_grad():
            torch.testing.assert_close(outs[m], plain(x), rtol=1e-5, atol=1e-5)
    for m in ("pi", "ntk", "abf"):  # every method really changes the computation
        assert (outs[m] - outs["none"]).abs().max() > 1e-4, m
    # position 0 has no rotation under any method: its logits are identical everywhere
    for m in ("pi", "ntk", "abf"):
        torch.testing.assert_close(outs[m][:, 0], outs["none"][:, 0], atol=1e-5, rtol=1e-5)
