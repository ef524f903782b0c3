"""The training objective: loss = L_LM + alpha(step) * L_misalign (docs/method.md, section 2).

The trainer calls `Objective(...)(model, window, step, gen)` and never looks inside; every ablation
axis is a registry in this package (pairings, divergences, scopes, targets, schedules, views). With
alpha = 0 and no --pair_windows the step is exactly one plain forward pass on a window of L tokens.
Returned metrics stay tensors on the device (no host sync); the loop reads them when it logs."""
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
        # aligned: the logits term may compute the LM losses in its own node (one gradient buffer, targets.py)
        self.defer_lm = self.align_on and not a.detach_long
        if not 0 < a.extra_frac <= 1:
            raise OLHError(f"extra_frac={a.extra_frac} must be in (0, 1]")
        self.extra_max = max(1, int(a.extra_frac * self.L)) if self.two_branch else 0
        if model_kind == "seq2seq" and self.extra_max >= self.L:
            raise OLHError(f"extra_frac={a.extra_frac} leaves no encoder context (need l_extra < seq_len)")
        self.window = self.views.window(self.pairing, self.extra_max)
        # every l_extra's slices and scope positions, once: a step only looks them up
        self.cuts = {e: self._cut(e) for e in range(1, self.extra_max + 1)} if self.align_on else {}

    def alpha(self, step: int) -> float:
        return self.alphas[step] if step < len(self.alphas) else alpha_at(step, self.total, self.a, self.L)

    def _cut(self, e: int):
        """The pairing's slices for l_extra = e and the scope's positions in each view: slices when
        consecutive (views of the logits, no gather), else index tensors."""
        long_s, short_s = self.pairing(self.L, e)
        n, off_long, off_short = self.views.overlap(long_s, short_s)
        idx = self.scope(n).tolist()
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return long_s, short_s, slice(off_long + idx[0], off_long + idx[-1] + 1), \
                slice(off_short + idx[0], off_short + idx[-1] + 1)
        return long_s, short_s, off_long + torch.tensor(idx), off_short + torch.tensor(idx)

    def __call__(self, model, seq: torch.Tensor, step: int, gen: torch.Generator):
        """seq: (B, window) token ids. Returns (loss, metrics: device tensors and python numbers)."""
        if not self.two_branch:
            (out,) = self.views.run(model, [self.views.plain(seq)], hidden=False)
            return out.lm, {"lm_loss": out.lm}
        e = int(torch.randint(1, self.extra_max + 1, (1,), generator=gen))
        long_s, short_s, li, si = self.cuts[e] if self.align_on else (*self.pairing(self.L, e), None, None)
        long, short = self.views.run(model, self.views.cut(seq, long_s, short_s), hidden=self.hidden,
                                     defer_lm=self.defer_lm)
        if not self.align_on:
            lm = 0.5 * (long.lm + short.lm)
            return lm, {"lm_loss": lm, "l_extra": e}
        if torch.is_tensor(li):
            li, si = li.to(seq.device, non_blocking=True), si.to(seq.device, non_blocking=True)
        if self.a.detach_long:
            long = long.detached()
        mis = self.target(long, short, li, si, self.div, self.a)
        self.views.finish_lm([long, short])  # a target that did not take the LM losses over
        lm, alpha = 0.5 * (long.lm + short.lm), self.alpha(step)
        return lm + alpha * mis, {"lm_loss": lm, "l_extra": e, "mis": mis, "alpha": alpha}
