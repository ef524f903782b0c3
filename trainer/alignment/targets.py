"""What the misalignment term compares: output distributions, hidden states, or both.

An entry is called with the two branch outputs (`Out`: log-probabilities and, if `needs_hidden`,
per-layer hidden states), the compared positions in each view (a slice for a run of consecutive
positions, which every shipped scope gives, else an index tensor), the divergence (a function of
two log-probability tensors, divergences.py) and the align config, and returns a scalar.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from trainer.errors import OLHError
from trainer.registry import Registry

TARGETS = Registry("alignment target")


@dataclass
class Out:
    logp: torch.Tensor              # (B, T, V) float32 log-softmax of the logits
    hiddens: list | None = None     # n_layer x (B, T, D), layer-normalized
    lm: torch.Tensor | None = None  # this view's LM loss (views.py fills it in)

    def detached(self) -> "Out":
        return Out(self.logp.detach(), [h.detach() for h in self.hiddens] if self.hiddens else self.hiddens, self.lm)


@functools.lru_cache(maxsize=None)  # parsed once per (spec, depth), not at every step
def _layers(spec: str, n: int) -> tuple[int, ...]:
    try:
        idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise OLHError(f"hidden_layers '{spec}': expected comma-separated integers") from None
    bad = [i for i in idx if not -n <= i < n]
    if bad or not idx:
        raise OLHError(f"hidden_layers '{spec}': the model has {n} layers (valid -{n}..{n - 1})")
    return tuple(idx)


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


def _logits(long: Out, short: Out, li, si, div, a) -> torch.Tensor:
    if not isinstance(li, slice) or li.stop - li.start <= CHUNK:
        return div(long.logp[:, li], short.logp[:, si]).mean()
    n = li.stop - li.start
    return _ChunkedDivergence.apply(long.logp, short.logp, li.start, si.start, n, div) / (long.logp.shape[0] * n)


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
