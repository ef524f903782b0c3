"""How each model kind turns one training window into views, runs them, and scores their LM loss.

causal (decoder, rnn): a view is a slice of the window, the model reads it from position 0 and
    predicts each next token inside it. The pairing (pairings.py) gives the long and short slices;
    overlap position i is long position off_long + i and short position off_short + i, the same
    absolute token. Default pairing `offset`: A = w[0:L], B = w[e:e+L], overlap i <-> (e+i, i).
seq2seq (encdec), prefix LM: the decoder predicts a continuation y of tgt_len tokens from BOS; the
    encoder reads the context before it. Both views are cut to end where the pairing's slices
    overlap end, y follows that point, and overlap position i is target position i in both.
    With `offset`: context c = w[:, :L], long encoder input c, short c[:, e:], y = w[:, L:L+m].

Views of equal shape run as one batch (one forward of [2B, T]); each view's log-softmax is computed
once and serves both its LM loss and the divergence."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from trainer.alignment.targets import Out, lm_from_picked
from trainer.errors import OLHError
from trainer.registry import Registry

VIEWS = Registry("model kind")


class View(NamedTuple):
    args: tuple            # the model's positional inputs
    target: torch.Tensor   # (B, T') next-token ids the LM loss scores
    scored: slice          # the logit positions that predict `target`


def _pick_index(logp: torch.Tensor, views: list[View]) -> torch.Tensor:
    """Flat indices into logp (the views' rows one after the other) of each scored target's log-probability."""
    T, V = logp.shape[1], logp.shape[2]
    pos = torch.arange(T, device=logp.device)[views[0].scored]
    tgt = torch.cat([v.target for v in views])                        # (n * B, T')
    rows = torch.arange(tgt.shape[0], device=logp.device)[:, None]
    return ((rows * T + pos) * V + tgt).reshape(-1)


def _lm_losses(logp: torch.Tensor, views: list[View]) -> list[torch.Tensor]:
    """Each view's mean next-token NLL. One gather of the target log-probabilities (no copy of the scored
    positions; its backward writes one zero tensor and a sparse scatter, not the NLL's and the slice's
    full-size gradients)."""
    return lm_from_picked(logp.reshape(-1)[_pick_index(logp, views)], len(views))


def _outputs(out, hidden: bool) -> Out:
    logits, hiddens = out if hidden else (out, None)
    return Out(F.log_softmax(logits.float(), dim=-1), hiddens)


class _Views:
    def run(self, model, views: list[View], hidden: bool, defer_lm: bool = False) -> list[Out]:
        """Forward every view (one batched call when their inputs have equal shapes) and attach
        each view's LM loss to its Out. defer_lm: batched views leave it to the misalignment term, which
        then computes both into one gradient buffer (Out.pick, targets.py); `finish_lm` is the fallback."""
        same = len(views) > 1 and all(len({a.shape for a in parts}) == 1 for parts in zip(*(v.args for v in views)))
        if same:
            both = _outputs(model(*(torch.cat(parts) for parts in zip(*(v.args for v in views))),
                                  return_hidden=hidden), hidden)
            n, B = len(views), views[0].target.shape[0]
            hs = list(zip(*(h.chunk(n) for h in both.hiddens))) if hidden else [None] * n
            outs = [Out(both.logp[i * B:(i + 1) * B], list(h) if h else None, batch=both.logp, rows=slice(i * B, (i + 1) * B))
                    for i, h in enumerate(hs)]
            if defer_lm:
                pick = _pick_index(both.logp, views)
                for o in outs:
                    o.pick = pick
                return outs
            lms = _lm_losses(both.logp, views)
        else:
            outs = [_outputs(model(*v.args, return_hidden=hidden), hidden) for v in views]
            lms = [_lm_losses(o.logp, [v])[0] for o, v in zip(outs, views)]
        for o, lm in zip(outs, lms):
            o.lm = lm
        return outs

    @staticmethod
    def finish_lm(outs: list[Out]) -> None:
        """The LM losses `run(defer_lm=True)` left to a misalignment term that did not take them."""
        if outs[0].lm is None:
            for o, lm in zip(outs, lm_from_picked(outs[0].batch.reshape(-1)[outs[0].pick], len(outs))):
                o.lm = lm

    def window(self, pairing, extra_max: int) -> int:
        """Tokens one window must hold so that every l_extra in [1, extra_max] fits."""
        self.longest = self.plain_window() - getattr(self, "m", 0)  # longest view (encoder side for encdec)
        if not extra_max:
            return self.plain_window()
        sizes = []
        for e in range(1, extra_max + 1):
            long, short = pairing(self.L, e)
            if self.overlap(long, short)[0] < 1 or min(long.stop - long.start, short.stop - short.start) < 2:
                raise OLHError(f"l_extra={e} leaves the views no overlap (lower extra_frac or pick another pairing)")
            sizes.append(self.reach(long, short))
            self.longest = max(self.longest, *(v.args[0].shape[1] for v in self.cut(torch.zeros(1, sizes[-1]), long, short)))
        return max(sizes)


@VIEWS.register("causal")
class CausalViews(_Views):
    def __init__(self, seq_len: int, tgt_len: int, bos_id: int):
        self.L = seq_len

    def plain_window(self) -> int:
        return self.L

    def reach(self, long: slice, short: slice) -> int:
        return max(long.stop, short.stop)

    def plain(self, seq) -> View:
        return self.view(seq[:, :self.L])

    @staticmethod
    def view(x) -> View:
        return View((x,), x[:, 1:], slice(0, -1))

    def cut(self, seq, long: slice, short: slice) -> list[View]:
        return [self.view(seq[:, long]), self.view(seq[:, short])]

    def overlap(self, long: slice, short: slice) -> tuple[int, int, int]:
        """(number of overlap positions, offset in the long view, offset in the short view)."""
        start = max(long.start, short.start)
        return min(long.stop, short.stop) - start, start - long.start, start - short.start


@VIEWS.register("seq2seq")
class Seq2SeqViews(_Views):
    def __init__(self, seq_len: int, tgt_len: int, bos_id: int):
        self.L, self.m, self.bos = seq_len, tgt_len, bos_id

    def plain_window(self) -> int:
        return self.L + self.m

    def reach(self, long: slice, short: slice) -> int:
        return min(long.stop, short.stop) + self.m

    def _view(self, ctx, y) -> View:
        dec = torch.cat([torch.full_like(y[:, :1], self.bos), y[:, :-1]], dim=1)  # (B, m), BOS first
        return View((ctx, dec), y, slice(None))

    def plain(self, seq) -> View:
        return self._view(seq[:, :self.L], seq[:, self.L:self.L + self.m])

    def cut(self, seq, long: slice, short: slice) -> list[View]:
        end = min(long.stop, short.stop)  # both contexts end here; y follows
        y = seq[:, end:end + self.m]
        return [self._view(seq[:, long.start:end], y), self._view(seq[:, short.start:end], y)]

    def overlap(self, long: slice, short: slice) -> tuple[int, int, int]:
        if long.start >= short.start or min(long.stop, short.stop) <= short.start:
            return 0, 0, 0  # the short context must be a proper, non-empty suffix of the long one
        return self.m, 0, 0
