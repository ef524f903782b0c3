"""``hf-mid``: lm-eval's ``hf`` model with LongBench's middle truncation of generation prompts.

lm-eval's ``hf`` cuts an over-long prompt from the left, which drops LongBench's instructions;
``hf-mid`` keeps the first and last halves, like THUDM ``pred.py`` (we keep the ids instead of
re-encoding decoded halves). Budget: ``max_length - max_gen_toks``, or ``prompt_budget=N`` (THUDM's
``model2maxlen``). Exact parity also needs ``batch_size=1``; see tasks/longbench_e/README.md."""
from __future__ import annotations

import logging

import lm_eval.models  # noqa: F401  # import the built-in registry first, or ``hf``/``dummy`` vanish
import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import has_bos_prefix

from olharness.tokens import middle_truncate, pad_batch

log = logging.getLogger(__name__)


@register_model("hf-mid")
class HFMidLM(HFLM):
    """``HFLM`` whose generation prompts are middle-truncated (see module docstring)."""

    def __init__(self, *args, prompt_budget: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prompt_budget = int(prompt_budget) if prompt_budget not in (None, "") else None
        if self.prompt_budget is not None and self.prompt_budget < 2:
            raise ValueError(f"hf-mid: prompt_budget must be >= 2, got {self.prompt_budget}")
        self._warned_budget = False
        self.n_truncated = 0

    def tok_batch_encode(self, strings: list[str], padding_side: str = "left", left_truncate_len: int | None = None,
                         truncation: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # HFLM calls this with ``left_truncate_len`` only from ``generate_until``.
        if not left_truncate_len or self.backend != "causal":
            return super().tok_batch_encode(strings, padding_side, left_truncate_len, truncation)
        budget = self.prompt_budget or left_truncate_len
        if self.prompt_budget and self.prompt_budget > left_truncate_len and not self._warned_budget:
            self._warned_budget = True
            log.warning(f"hf-mid: prompt_budget={self.prompt_budget} plus max_gen_toks exceeds max_length="
                        f"{self.max_length}; generation may run past the model's context")
        add = False if has_bos_prefix(strings[0], getattr(self.tokenizer, "bos_token", None)) else self.add_bos_token
        special = {} if add is None else {"add_special_tokens": add}
        rows = []
        for s in strings:
            ids = self.tokenizer(s, **special)["input_ids"]
            cut = middle_truncate(ids, budget)
            if len(cut) < len(ids):
                self.n_truncated += 1
                (log.warning if self.n_truncated == 1 else log.debug)(
                    f"hf-mid: prompt of {len(ids)} tokens middle-truncated to {len(cut)} "
                    "(first and last halves kept; further truncations are logged at DEBUG)")
            rows.append(cut)
        pad = next((t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) if t is not None), 0)
        input_ids, mask = pad_batch(rows, pad, left=padding_side == "left")
        return input_ids, mask.long()
