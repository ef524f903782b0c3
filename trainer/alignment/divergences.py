"""Divergences D(long, short) between two next-token distributions given as logits.

Each entry maps (long_logits, short_logits) of shape (..., V) to per-position values (...). They
work in float32 on log-softmax outputs, so ±1e4 logits and bf16 inputs stay finite.
Add one with a decorated function; nothing else changes.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from trainer.errors import OLHError
from trainer.registry import Registry

DIVERGENCES = Registry("divergence")


def _logp(x: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(x.float(), dim=-1)


def _kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) from log-probabilities; terms with p = 0 contribute 0."""
    return (lp.exp() * (lp - lq)).sum(-1)


@DIVERGENCES.register("sce", help="symmetric cross-entropy CE(p,q)+CE(q,p) (paper default)")
def sce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lp, lq = _logp(a), _logp(b)
    return -(lp.exp() * lq).sum(-1) - (lq.exp() * lp).sum(-1)


@DIVERGENCES.register("kl", help="KL divergence; direction by --kl_direction (long_short | short_long)")
def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _kl(_logp(a), _logp(b))


@DIVERGENCES.register("sym_kl", help="KL(p||q)+KL(q||p): SCE without the two entropy terms")
def sym_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lp, lq = _logp(a), _logp(b)
    return _kl(lp, lq) + _kl(lq, lp)


@DIVERGENCES.register("js", help="Jensen-Shannon divergence (natural log, at most ln 2)")
def js(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lp, lq = _logp(a), _logp(b)
    lm = torch.logsumexp(torch.stack([lp, lq]), dim=0) - math.log(2.0)  # log of the mixture
    return 0.5 * _kl(lp, lm) + 0.5 * _kl(lq, lm)


@DIVERGENCES.register("l2", help="squared L2 distance between probability vectors")
def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (_logp(a).exp() - _logp(b).exp()).pow(2).sum(-1)


KL_DIRECTIONS = ("long_short", "short_long")


def build_divergence(name: str, kl_direction: str = "long_short"):
    """The divergence called as D(long_logits, short_logits), with the KL direction applied."""
    fn = DIVERGENCES.get(name)
    if kl_direction not in KL_DIRECTIONS:
        raise OLHError(f"unknown kl_direction '{kl_direction}'; valid: {', '.join(KL_DIRECTIONS)}")
    if name == "kl" and kl_direction == "short_long":
        return lambda a, b: fn(b, a)
    return functools.partial(fn)
