"""alpha(step): the weight of the misalignment loss over training.

An entry maps (step, total_steps, align_cfg) to alpha before the length-ratio factor
(l_test / seq_len)^alpha_len_p, which `alpha_at` multiplies in for every schedule."""
from __future__ import annotations

import functools
import math

from trainer.errors import OLHError
from trainer.registry import Registry

SCHEDULES = Registry("alpha schedule")


@SCHEDULES.register("constant", help="alpha at every step")
def constant(step, total, a):
    return a.alpha


@SCHEDULES.register("linear", help="alpha_start -> alpha linearly over the run")
def linear(step, total, a):
    t = min(1.0, step / max(1, total))
    return a.alpha_start + (a.alpha - a.alpha_start) * t


@SCHEDULES.register("cosine", help="alpha_start -> alpha along a half cosine over the run")
def cosine(step, total, a):
    t = min(1.0, step / max(1, total))
    return a.alpha_start + (a.alpha - a.alpha_start) * 0.5 * (1 - math.cos(math.pi * t))


@SCHEDULES.register("warmup", help="0 -> alpha linearly over alpha_warmup steps, then alpha")
def warmup(step, total, a):
    return a.alpha * min(1.0, step / max(1, a.alpha_warmup))


@functools.lru_cache(maxsize=None)  # parsed once per spec, not at every step
def parse_milestones(spec: str) -> tuple[tuple[int, float], ...]:
    try:
        pts = [(int(s), float(v)) for s, v in (p.split(":") for p in spec.split(",") if p.strip())]
    except ValueError:
        raise OLHError(f"alpha_milestones '{spec}': expected 'STEP:ALPHA,STEP:ALPHA'") from None
    if not pts:
        raise OLHError("alpha_schedule=step needs --alpha_milestones 'STEP:ALPHA,...'")
    return tuple(sorted(pts))


@SCHEDULES.register("step", help="piecewise constant: alpha, then each STEP:ALPHA of alpha_milestones")
def step_schedule(step, total, a):
    return next((v for s, v in reversed(parse_milestones(a.alpha_milestones)) if step >= s), a.alpha)


def length_factor(a, seq_len: int) -> float:
    """(l_test / l_train)^p; l_test defaults to 4 * seq_len."""
    return ((a.l_test or 4 * seq_len) / seq_len) ** a.alpha_len_p if a.alpha_len_p else 1.0


def alpha_at(step: int, total: int, a, seq_len: int) -> float:
    return SCHEDULES.get(a.alpha_schedule)(step, total, a) * length_factor(a, seq_len)
