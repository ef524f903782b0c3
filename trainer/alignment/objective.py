"""The training objective: loss = L_LM + alpha(step) * L_misalign (docs/method.md, section 2).

The trainer calls `Objective(...)(model, window, step)` and never looks inside; every ablation axis
is a registry in this package (divergences, scopes, targets, schedules, views). With alpha = 0 and
no --pair_windows the step is exactly one plain forward pass on a window of L tokens.
"""
from __future__ import annotations

import time

import torch

from trainer.alignment.divergences import build_divergence
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
        self.div = build_divergence(a.divergence, a.kl_direction)
        self.scope = SCOPES.get(a.scope)
        self.target = TARGETS.get(a.target)
        SCHEDULES.get(a.alpha_schedule)
        self.hidden = needs_hidden(a.target)
        self.views = VIEWS.get(model_kind)(cfg.data.seq_len, cfg.data.tgt_len, bos_id)
        self.align_on = max(self.alpha(s) for s in range(self.total + 1)) > 0
        self.two_branch = self.align_on or a.pair_windows
        if not 0 < a.extra_frac <= 1:
            raise OLHError(f"extra_frac={a.extra_frac} must be in (0, 1]")
        self.extra_max = max(1, int(a.extra_frac * self.L)) if self.two_branch else 0
        if model_kind == "seq2seq" and self.extra_max >= self.L:
            raise OLHError(f"extra_frac={a.extra_frac} leaves no encoder context (need l_extra < seq_len)")
        self.window = self.views.window(self.extra_max)

    def alpha(self, step: int) -> float:
        return alpha_at(step, self.total, self.a, self.L)

    def __call__(self, model, seq: torch.Tensor, step: int, gen: torch.Generator, sync=lambda: None):
        """seq: (B, window) token ids. Returns (loss, metrics dict of floats)."""
        t0 = time.perf_counter()
        long, lm_long = self.views.forward(model, seq, 0, short=False, hidden=self.hidden and self.align_on)
        sync()
        t1 = time.perf_counter()
        m = {"fwd_ms_long": 1e3 * (t1 - t0)}
        if not self.two_branch:
            m["lm_loss"] = lm_long.item()
            return lm_long, m
        e = int(torch.randint(1, self.extra_max + 1, (1,), generator=gen))
        short, lm_short = self.views.forward(model, seq, e, short=True, hidden=self.hidden and self.align_on)
        sync()
        m["fwd_ms_short"] = 1e3 * (time.perf_counter() - t1)
        lm = 0.5 * (lm_long + lm_short)
        m.update(lm_loss=lm.item(), l_extra=e)
        if not self.align_on:
            return lm, m
        n, off_long, off_short = self.views.overlap(e)
        idx = self.scope(n).to(seq.device)
        if self.a.detach_long:
            long.logits = long.logits.detach()
            long.hiddens = [h.detach() for h in long.hiddens] if long.hiddens else long.hiddens
        mis = self.target(long, short, off_long + idx, off_short + idx, self.div, self.a)
        alpha = self.alpha(step)
        m.update(mis=mis.item(), alpha=alpha)
        return lm + alpha * mis, m
