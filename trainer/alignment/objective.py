"""The training objective: loss = L_LM + alpha(step) * L_misalign (docs/method.md, section 2).

The trainer calls `Objective(...)(model, window, step, gen)` and never looks inside; every ablation
axis is a registry in this package (pairings, divergences, scopes, targets, schedules, views). With
alpha = 0 and no --pair_windows the step is exactly one plain forward pass on a window of L tokens.
Returned metrics stay tensors on the device (no host sync); the loop reads them when it logs.
"""
from __future__ import annotations

import torch

from trainer.alignment.divergences import build_divergence
from trainer.alignment.pairings import PAIRINGS
from trainer.alignment.schedules import SCHEDULES, alpha_at
from trainer.alignment.scopes import SCOPES
from trainer.alignment.targets import TARGETS, needs_hidden
from trainer.alignment.views import VIEWS
from trainer.errors import OLHError


class Objective:
    def __init__(self, cfg, model_kind: str, bos_id: int = 1):
        a, self.a = cfg.align, cfg.align
        self.L, self.total = cfg.data.seq_len, cfg.train.max_steps
        # resolve every name now so a typo fails before training starts
        self.div = build_divergence(a.divergence, a.kl_direction, on_logits=False)
        self.scope = SCOPES.get(a.scope)
        self.target = TARGETS.get(a.target)
        self.pairing = PAIRINGS.get(a.pairing)
        SCHEDULES.get(a.alpha_schedule)
        self.views = VIEWS.get(model_kind)(cfg.data.seq_len, cfg.data.tgt_len, bos_id)
        self.alphas = [alpha_at(s, self.total, a, self.L) for s in range(self.total + 1)]  # once
        self.align_on = max(self.alphas) > 0
        self.hidden = needs_hidden(a.target) and self.align_on
        self.two_branch = self.align_on or a.pair_windows
        if not 0 < a.extra_frac <= 1:
            raise OLHError(f"extra_frac={a.extra_frac} must be in (0, 1]")
        self.extra_max = max(1, int(a.extra_frac * self.L)) if self.two_branch else 0
        if model_kind == "seq2seq" and self.extra_max >= self.L:
            raise OLHError(f"extra_frac={a.extra_frac} leaves no encoder context (need l_extra < seq_len)")
        self.window = self.views.window(self.pairing, self.extra_max)
        self._scope_idx: dict = {}

    def alpha(self, step: int) -> float:
        if step < len(self.alphas):
            return self.alphas[step]
        return alpha_at(step, self.total, self.a, self.L)

    def scope_positions(self, n: int, off: int, device):
        """The scope's positions in a view whose overlap starts at `off`: a slice when they are
        consecutive (a view, no gather), else an index tensor; built once per (n, off, device)."""
        key = (n, off, str(device))
        if key not in self._scope_idx:
            idx = self.scope(n)
            run = len(idx) and int(idx[-1]) - int(idx[0]) == len(idx) - 1 and bool((idx.diff() == 1).all())
            self._scope_idx[key] = slice(off + int(idx[0]), off + int(idx[-1]) + 1) if run else (off + idx).to(device)
        return self._scope_idx[key]

    def __call__(self, model, seq: torch.Tensor, step: int, gen: torch.Generator):
        """seq: (B, window) token ids. Returns (loss, metrics: device tensors and python numbers)."""
        if not self.two_branch:
            (out,) = self.views.run(model, [self.views.plain(seq)], hidden=False)
            return out.lm, {"lm_loss": out.lm}
        e = int(torch.randint(1, self.extra_max + 1, (1,), generator=gen))
        long_s, short_s = self.pairing(self.L, e)
        long, short = self.views.run(model, self.views.cut(seq, long_s, short_s), hidden=self.hidden)
        lm = 0.5 * (long.lm + short.lm)
        m = {"lm_loss": lm, "l_extra": e}
        if not self.align_on:
            return lm, m
        n, off_long, off_short = self.views.overlap(long_s, short_s)
        li, si = self.scope_positions(n, off_long, seq.device), self.scope_positions(n, off_short, seq.device)
        if self.a.detach_long:
            long = long.detached()
        mis = self.target(long, short, li, si, self.div, self.a)
        alpha = self.alpha(step)
        m.update(mis=mis, alpha=alpha)
        return lm + alpha * mis, m
