"""Divergences D(long, short) between two next-token distributions.

Each entry maps two log-probability tensors (lp, lq) of shape (..., V), float32, to per-position values (...). The
trainer computes each view's log-softmax once and shares it with the LM loss; an entry may carry `with_grads(lp, lq) ->
(values, d sum/d lp, d sum/d lq)` for the training step; `build_divergence` also offers every entry on raw logits
(olharness scores logits). Working on log-softmax outputs keeps ±1e4 logits and bf16 inputs finite. Add one with a
decorated function; nothing else changes."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainer.errors import OLHError
from trainer.registry import Registry

DIVERGENCES = Registry("divergence")


def log_probs(x: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(x.float(), dim=-1)


def _kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) from log-probabilities; terms with p = 0 contribute 0."""
    return (lp.exp() * (lp - lq)).sum(-1)


@DIVERGENCES.register("sce", help="symmetric cross-entropy CE(p,q)+CE(q,p) (paper default)")
def sce(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    return -(lp.exp() * lq).sum(-1) - (lq.exp() * lp).sum(-1)


def _sce_with_grads(lp: torch.Tensor, lq: torch.Tensor):
    """sce and its gradients in lp and lq, in a few passes over the inputs (the aligned training
    step's hot path, trainer/alignment/targets.py; autograd would store and revisit more products)."""
    p, q = lp.exp(), lq.exp()
    gp, gq = torch.addcmul(q, p, lq), torch.addcmul(p, q, lp)  # -d/dlp = q + p lq, -d/dlq = p + q lp
    # -sum p lq - sum q lp from the same two products: a reordering of the sums (within 1e-6 of sce())
    return p.sum(-1) + q.sum(-1) - gp.sum(-1) - gq.sum(-1), gp.neg_(), gq.neg_()


sce.with_grads = _sce_with_grads


@DIVERGENCES.register("kl", help="KL divergence; direction by --kl_direction (long_short | short_long)")
def kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    return _kl(lp, lq)


@DIVERGENCES.register("sym_kl", help="KL(p||q)+KL(q||p): SCE without the two entropy terms")
def sym_kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    return _kl(lp, lq) + _kl(lq, lp)


@DIVERGENCES.register("js", help="Jensen-Shannon divergence (natural log, at most ln 2)")
def js(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    lm = torch.logsumexp(torch.stack([lp, lq]), dim=0) - math.log(2.0)  # log of the mixture
    return 0.5 * _kl(lp, lm) + 0.5 * _kl(lq, lm)


@DIVERGENCES.register("l2", help="squared L2 distance between probability vectors")
def l2(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    return (lp.exp() - lq.exp()).pow(2).sum(-1)


KL_DIRECTIONS = ("long_short", "short_long")


def build_divergence(name: str, kl_direction: str = "long_short", on_logits: bool = True):
    """D(long, short) with the KL direction applied, on logits (default) or on log-probabilities."""
    fn = DIVERGENCES.get(name)
    if kl_direction not in KL_DIRECTIONS:
        raise OLHError(f"unknown kl_direction '{kl_direction}'; valid: {', '.join(KL_DIRECTIONS)}")
    if name == "kl" and kl_direction == "short_long":
        fn = (lambda f: lambda lp, lq: f(lq, lp))(fn)
    return (lambda f: lambda a, b: f(log_probs(a), log_probs(b)))(fn) if on_logits else fn
