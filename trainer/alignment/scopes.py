"""Which overlap positions the misalignment term is applied to.

An entry maps the overlap length n to the indices i in [0, n) that are compared (position i of the
overlap is long-view position e+i and short-view position i for causal models; target position i
for encdec). Index 0 is where the short view has the least left context."""
from __future__ import annotations

import math

import torch

from trainer.errors import OLHError
from trainer.registry import Registry

SCOPES = Registry("scope")


@SCOPES.register("all", help="every overlap position (paper)")
def all_positions(n: int) -> torch.Tensor:
    return torch.arange(n)


@SCOPES.register("last", help="the last overlap position only")
def last(n: int) -> torch.Tensor:
    return torch.tensor([n - 1])


@SCOPES.register("first", help="the first overlap position only")
def first(n: int) -> torch.Tensor:
    return torch.tensor([0])


@SCOPES.register("first_frac", takes_arg=True, help="the first F fraction of the overlap (at least one)")
def first_frac(arg: str):
    try:
        f = float(arg)
    except ValueError:
        raise OLHError(f"scope first_frac:{arg}: the fraction must be a number in (0, 1]") from None
    if not 0 < f <= 1:
        raise OLHError(f"scope first_frac:{arg}: the fraction must be in (0, 1]")
    return lambda n: torch.arange(max(1, math.ceil(f * n)))
