"""Long-short misalignment on a scalar output (the optional regularizer of the synthetic suite).

The §1.2 construction with a scalar in place of a distribution: from a training sequence x of
length l take the long view x and the short view x[e:] (the last l-e bits, e ~ U{1..max(1,
⌊extra_frac·l⌋)}, capped at l-1). Both views end on the same bit and differ only in how much left
context they see. Loss = mean(MSE(long), MSE(short)) + alpha * D(ŷ_long, ŷ_short), D on the model's
(standardized, reparameterized) output. alpha = 0 runs one view unless --pair_windows.

Note the target itself may differ between the views (length: by e; mean: by chance), so the
regularizer trades fit for length-invariance of the output; that trade is what it lets you study.
"""
from __future__ import annotations

import torch

from trainer.registry import Registry

SCALAR_DIVERGENCES = Registry("scalar divergence")


@SCALAR_DIVERGENCES.register("l2", help="(a - b)^2")
def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2)


@SCALAR_DIVERGENCES.register("l1", help="|a - b|")
def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs()


def draw_extra(gen: torch.Generator, length: int, extra_frac: float) -> int:
    """e ~ U{1..max(1, floor(extra_frac * length))}, capped at length - 1; 0 when length == 1."""
    if length < 2:
        return 0
    hi = min(length - 1, max(1, int(extra_frac * length)))
    return int(torch.randint(1, hi + 1, (1,), generator=gen))
