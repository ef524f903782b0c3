"""How each model kind turns one training window into the long and short views.

causal (decoder, rnn) -- the paper's efficient form, window of L + E tokens:
    A = seq[:, 0:L]          long view: overlap token j has e more tokens of left context
    B = seq[:, e:e+L]        short view
    overlap position i  <->  A position e+i, B position i   (same absolute token seq[e+i])
seq2seq (encdec) -- prefix LM, window of L + m tokens: context c = seq[:, :L], target y = seq[:, L:]
    long view:  encoder gets c (L tokens);  short view: encoder gets c[:, e:] (L - e tokens)
    the decoder predicts y from BOS in both; overlap position i = target position i.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.alignment.targets import Out
from trainer.registry import Registry

VIEWS = Registry("model kind")


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


@VIEWS.register("causal")
class CausalViews:
    def __init__(self, seq_len: int, tgt_len: int, bos_id: int):
        self.L = seq_len

    def window(self, extra_max: int) -> int:
        return self.L + extra_max

    def forward(self, model, seq, e: int, short: bool, hidden: bool) -> tuple[Out, torch.Tensor]:
        """Run one view; returns its outputs and its LM loss (next-token CE inside the view)."""
        x = seq[:, e:e + self.L] if short else seq[:, :self.L]
        out = model(x, return_hidden=hidden)
        out = Out(*out) if hidden else Out(out)
        return out, _ce(out.logits[:, :-1], x[:, 1:])

    def overlap(self, e: int) -> tuple[int, int, int]:
        """(number of overlap positions, offset in the long view, offset in the short view)."""
        return self.L - e, e, 0


@VIEWS.register("seq2seq")
class Seq2SeqViews:
    def __init__(self, seq_len: int, tgt_len: int, bos_id: int):
        self.L, self.m, self.bos = seq_len, tgt_len, bos_id

    def window(self, extra_max: int) -> int:
        return self.L + self.m

    def forward(self, model, seq, e: int, short: bool, hidden: bool):
        ctx, y = seq[:, :self.L], seq[:, self.L:self.L + self.m]
        enc = ctx[:, e:] if short else ctx
        dec = torch.cat([torch.full_like(y[:, :1], self.bos), y[:, :-1]], dim=1)  # (B, m), BOS first
        out = model(enc, dec, return_hidden=hidden)
        out = Out(*out) if hidden else Out(out)
        return out, _ce(out.logits, y)

    def overlap(self, e: int):
        return self.m, 0, 0
