"""How the long and short views are cut from one training window: the window-pairing axis.

An entry maps (L, e) -- the training length and this step's l_extra ~ U[1, extra_frac * L] -- to two
slices of the window, (long, short). On the tokens both slices cover, the long view has seen more
left context. Nothing else is needed: views.py derives the window size (the furthest any slice
reaches), the overlap and, for encdec, cuts both views to end where the overlap ends.

    @PAIRINGS.register("half", help="short = the second half of long = w[0:L]")
    def half(L, e):
        return slice(0, L), slice(L // 2, L)"""
from __future__ import annotations

from trainer.registry import Registry

PAIRINGS = Registry("pairing")


@PAIRINGS.register("offset", help="two windows of L tokens: long = w[0:L], short = w[e:e+L] (paper's training form)")
def offset(L: int, e: int) -> tuple[slice, slice]:
    return slice(0, L), slice(e, e + L)


@PAIRINGS.register("nested", help="short = w[e:L], the last L-e tokens of long = w[0:L] (the LSM metric's form)")
def nested(L: int, e: int) -> tuple[slice, slice]:
    return slice(0, L), slice(e, L)


@PAIRINGS.register("prefix_suffix", help="short = w[e:e+L]; long = w[0:e+L], the same L tokens after a prefix of e")
def prefix_suffix(L: int, e: int) -> tuple[slice, slice]:
    return slice(0, e + L), slice(e, e + L)
