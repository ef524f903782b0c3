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


#: overlap positions per chunk of the logits term: the log-softmaxes and products of one chunk, not
#: of the whole [B, n, V] overlap, exist at a time (the backward pass recomputes them chunk by chunk)
CHUNK = 128


class _ChunkedDivergence(torch.autograd.Function):
    """sum over positions of div(x[:, xs + i], y[:, ys + i]), i < n, in chunks of CHUNK positions.

    Gradients are written straight into zero tensors shaped like the whole logits, which become
    autograd's gradient buffers of x and y (shared with the LM loss), so the term adds no
    [B, L, V] tensor of its own beyond one chunk's intermediates."""

    @staticmethod
    def forward(ctx, x, y, xs: int, ys: int, n: int, div):
        ctx.save_for_backward(x, y)
        ctx.args = (xs, ys, n, div)
        return sum(div(x[:, xs + c:xs + min(c + CHUNK, n)], y[:, ys + c:ys + min(c + CHUNK, n)]).sum()
                   for c in range(0, n, CHUNK))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        xs, ys, n, div = ctx.args
        gx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        gy = torch.zeros_like(y) if ctx.needs_input_grad[1] else None
        for c in range(0, n, CHUNK):
            k = min(c + CHUNK, n) - c
            xc = x[:, xs + c:xs + c + k].detach().requires_grad_(gx is not None)
            yc = y[:, ys + c:ys + c + k].detach().requires_grad_(gy is not None)
            with torch.enable_grad():
                grads = torch.autograd.grad(div(xc, yc).sum() * g, [t for t in (xc, yc) if t.requires_grad])
            grads = list(grads)
            if gx is not None:
                gx[:, xs + c:xs + c + k] = grads.pop(0)
            if gy is not None:
                gy[:, ys + c:ys + c + k] = grads.pop(0)
        return gx, gy, None, None, None, None


def _run(idx: torch.Tensor) -> tuple[int, int] | None:
    """(start, length) when idx is a run of consecutive positions (every scope gives one)."""
    n = len(idx)
    if n and int(idx[-1]) - int(idx[0]) == n - 1 and bool((idx.diff() == 1).all()):
        return int(idx[0]), n
    return None


def _logits(long: Out, short: Out, li, si, div, a) -> torch.Tensor:
    rl, rs = _run(li), _run(si)
    if rl is None or rs is None or rl[1] <= CHUNK:
        return div(long.logits[:, li], short.logits[:, si]).mean()
    n = rl[1]
    return _ChunkedDivergence.apply(long.logits, short.logits, rl[0], rs[0], n, div) / (long.logits.shape[0] * n)


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
