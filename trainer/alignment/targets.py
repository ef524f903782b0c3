"""What the misalignment term compares: output distributions, hidden states, or both.

An entry is called with the two branch outputs (`Out`: log-probabilities and, if `needs_hidden`,
per-layer hidden states), the compared positions in each view (a slice for a run of consecutive
positions, which every shipped scope gives, else an index tensor), the divergence (a function of
two log-probability tensors, divergences.py) and the align config, and returns a scalar."""
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
    batch: torch.Tensor | None = None  # views run as one batch: their log-probs, of which logp = batch[rows]
    rows: slice | None = None
    pick: torch.Tensor | None = None   # LM loss deferred (lm None): flat indices of the targets in batch

    def detached(self) -> "Out":
        return Out(self.logp.detach(), [h.detach() for h in self.hiddens] if self.hiddens else self.hiddens, self.lm)


def lm_from_picked(picked: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Each of n views' mean next-token NLL from its picked target log-probabilities (view after view)."""
    return list(-picked.view(n, -1).mean(1))


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


class _SlicedDivergence(torch.autograd.Function):
    """sum over positions of div(x[rx, xs + i], y[ry, ys + i]), i < n; y None: both views are rows of one batched tensor
    x. With `pick` (flat indices into x; y None) the output is [that sum, x.flatten()[pick]...]: the LM losses' target
    log-probabilities come out of the same node, so their gradient lands in the same buffer.

    Gradients are written straight into one zero tensor shaped like each input, which becomes autograd's gradient buffer
    of the log-probs (shared with the LM loss): no per-view or per-slice full-size gradient to zero, copy and add. Up to
    CHUNK positions a divergence's closed-form gradients (`with_grads`, divergences.py) or else the forward's graph are
    kept for the backward pass; longer overlaps go in chunks of CHUNK positions, recomputed in the backward pass, so the
    term adds no [B, L, V] tensor of its own beyond one chunk's intermediates."""

    @staticmethod
    def forward(ctx, x, y, rx: slice, ry: slice, xs: int, ys: int, n: int, div, pick=None):
        ctx.save_for_backward(x, y, pick)
        ctx.args = (rx, ry, xs, ys, n, div)
        ctx.kept = ctx.grads = None
        pair = _SlicedDivergence._pair
        if n <= CHUNK and hasattr(div, "with_grads"):  # closed-form gradients, computed with the value
            value, *grads = div.with_grads(*pair(ctx, x, y, 0, n, grad=False))
            ctx.grads = grads
            value = value.sum()
        elif n <= CHUNK:
            with torch.enable_grad():
                ctx.kept = pair(ctx, x, y, 0, n)
                ctx.val = div(*ctx.kept).sum()
            value = ctx.val.detach()
        else:
            value = sum(div(*pair(ctx, x, y, c, min(c + CHUNK, n) - c, grad=False)).sum() for c in range(0, n, CHUNK))
        return value if pick is None else torch.cat([value.reshape(1), x.reshape(-1)[pick]])

    @staticmethod
    def _pair(ctx, x, y, c: int, k: int, grad: bool = True):
        """Chunk [c, c + k) of both views, detached; requiring grad where the backward pass needs it."""
        rx, ry, xs, ys, _, _ = ctx.args
        wants = ctx.needs_input_grad[0], ctx.needs_input_grad[0] if y is None else ctx.needs_input_grad[1]
        return [t.detach().requires_grad_(grad and w) for t, w in
                zip((x[rx, xs + c:xs + c + k], (x if y is None else y)[ry, ys + c:ys + c + k]), wants)]

    @staticmethod
    def backward(ctx, g):
        x, y, pick = ctx.saved_tensors
        gx = _SlicedDivergence._grads(ctx, x, y, g if pick is None else g[0])
        if pick is not None and gx[0] is not None:  # the LM losses' share, added where the divergence wrote
            gx[0].view(-1).index_add_(0, pick, g[1:])
        return *gx, None, None, None, None, None, None, None

    @staticmethod
    def _grads(ctx, x, y, g):
        rx, ry, xs, ys, n, div = ctx.args
        gx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        gy = torch.zeros_like(y) if y is not None and ctx.needs_input_grad[1] else None
        into = (gx, gx if y is None else gy)
        if ctx.grads is not None:
            for grad, buf, r, s in zip(ctx.grads, into, (rx, ry), (xs, ys)):
                if buf is not None:
                    torch.mul(grad, g, out=buf[r, s:s + n])
            ctx.grads = None
            return gx, gy
        for c in range(0, n, CHUNK):
            k = min(c + CHUNK, n) - c
            if ctx.kept is not None:
                pair, val = ctx.kept, ctx.val
            else:
                pair = _SlicedDivergence._pair(ctx, x, y, c, k)
                with torch.enable_grad():
                    val = div(*pair).sum()
            need = [t for t in pair if t.requires_grad]
            grads = list(torch.autograd.grad(val, need, g)) if need else []
            for t, buf, r, s in zip(pair, into, (rx, ry), (xs, ys)):
                if t.requires_grad:
                    buf[r, s + c:s + c + k] = grads.pop(0)
        ctx.kept = ctx.val = None
        return gx, gy


def _logits(long: Out, short: Out, li, si, div, a) -> torch.Tensor:
    if not isinstance(li, slice):
        return div(long.logp[:, li], short.logp[:, si]).mean()
    n = li.stop - li.start
    if long.batch is not None and long.batch is short.batch:
        out = _SlicedDivergence.apply(long.batch, None, long.rows, short.rows, li.start, si.start, n, div, long.pick)
        if long.pick is not None:  # the views left their LM losses to this node (views.py: defer_lm)
            out, picked = out[0], out[1:]
            long.lm, short.lm = lm_from_picked(picked, 2)
            long.pick = short.pick = None
    else:
        out = _SlicedDivergence.apply(long.logp, short.logp, slice(None), slice(None), li.start, si.start, n, div)
    return out / (long.logp.shape[0] * n)


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
