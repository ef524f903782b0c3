"""What the misalignment term compares: output distributions, hidden states, or both.

An entry is called with the two branch outputs (`Out`: logits and, if `needs_hidden`, per-layer
hidden states), the compared positions in each view, the divergence and the align config, and
returns a scalar.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.errors import OLHError
from trainer.registry import Registry

TARGETS = Registry("alignment target")


@dataclass
class Out:
    logits: torch.Tensor            # (B, T, V)
    hiddens: list | None = None     # n_layer x (B, T, D), layer-normalized


def _layers(spec: str, n: int) -> list[int]:
    try:
        idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise OLHError(f"hidden_layers '{spec}': expected comma-separated integers") from None
    bad = [i for i in idx if not -n <= i < n]
    if bad or not idx:
        raise OLHError(f"hidden_layers '{spec}': the model has {n} layers (valid -{n}..{n - 1})")
    return idx


def _logits(long: Out, short: Out, li, si, div, a) -> torch.Tensor:
    return div(long.logits[:, li], short.logits[:, si]).mean()


def _hidden(long: Out, short: Out, li, si, div, a) -> torch.Tensor:
    layers = _layers(a.hidden_layers, len(long.hiddens))
    # MSE per position over the (normalized) feature dim, averaged over positions and layers
    return torch.stack([(long.hiddens[i][:, li] - short.hiddens[i][:, si]).pow(2).mean(-1).mean()
                        for i in layers]).mean()


TARGETS.register("logits", help="divergence between next-token distributions (paper)")(_logits)
TARGETS.register("hidden", help="MSE between layer-normalized hidden states at --hidden_layers")(_hidden)


@TARGETS.register("hidden+logits", help="logits term + hidden_weight * hidden term")
def _both(long, short, li, si, div, a):
    return _logits(long, short, li, si, div, a) + a.hidden_weight * _hidden(long, short, li, si, div, a)


_hidden.needs_hidden = True
_both.needs_hidden = True


def needs_hidden(name: str) -> bool:
    return getattr(TARGETS.get(name), "needs_hidden", False)
