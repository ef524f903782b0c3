"""Token-list helpers of the model adapters (``ol``, ``hf-lsm``, ``hf-mid``): batch padding and
LongBench's middle truncation (THUDM ``pred.py`` keeps ``ids[:half] + ids[-half:]``, on decoded text)."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, device=None, left: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, both (B, T_max): the id lists padded with ``pad_id`` on the right (causal
    models never attend to it) or on the ``left`` (generation prompts); mask is True on real tokens."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        cols = slice(T - len(s), T) if left else slice(0, len(s))
        ids[i, cols] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, cols] = True
    return ids.to(device), mask.to(device)


def middle_truncate(ids: Sequence[int], budget: int) -> list[int]:
    """``ids`` as a list if they fit ``budget``, else the first and the last ``budget // 2`` (an odd budget
    keeps ``budget - 1``, as THUDM's ``int(max_length / 2)``). A budget below 2 raises instead of letting
    ``ids[-0:]`` keep everything: such a prompt is a configuration error (max_gen_toks >= the context)."""
    budget = int(budget)
    if budget < 0:
        raise ValueError(f"middle_truncate: budget must be >= 0, got {budget}")
    ids = list(ids)
    if len(ids) <= budget:
        return ids
    half = budget // 2
    if half == 0:
        raise ValueError(f"middle_truncate: a prompt of {len(ids)} tokens cannot be truncated to a budget of "
                         f"{budget} (need at least 2 tokens); check max_length and max_gen_toks")
    return ids[:half] + ids[-half:]
