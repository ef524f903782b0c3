"""Output reparameterizations of a regression target: the model learns y = f(t), we score f⁻¹(ŷ).

The paper trains length prediction on f(l) in {√l, log l, 1/√l}; we ship those, the identity, and ``square``/``cube``
(faster than l) as the opposite ablation. Every entry carries its inverse and domains, so errors are scored in target
space. A model output outside f⁻¹'s domain is a prediction, not a user error: ``to_target`` clamps it to the nearest
valid value (our choice; the paper is silent) and reports which ones it moved."""
from __future__ import annotations

from typing import Callable

import torch

from trainer.errors import OLHError
from trainer.registry import Registry

REPARAMS = Registry("reparam")

Bound = tuple[float, bool]  # (value, open): open=True means strictly greater than value


def _as_f64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


class Reparam:
    """A target transform f with its inverse: x_lo / y_lo bound f's / f⁻¹'s domain (None = all reals), y_clamp
    is the (lo, hi) `to_target` clamps model outputs into before inverting (None = no bound)."""

    def __init__(self, name: str, f: Callable, finv: Callable, x_lo: Bound | None = None,
                 y_lo: Bound | None = None, y_clamp: tuple[float | None, float | None] = (None, None)):
        self.name, self.f, self.finv = name, f, finv
        self.x_lo, self.y_lo, self.y_clamp = x_lo, y_lo, y_clamp

    def __repr__(self) -> str:
        return f"Reparam({self.name})"

    def _check(self, v: torch.Tensor, bound: Bound | None, what: str, var: str) -> None:
        if bound is None:
            return
        lo, open_ = bound
        bad = ((v <= lo) if open_ else (v < lo)) | torch.isnan(v)
        if bool(bad.any()):
            raise OLHError(f"reparam {self.name}: {what} needs {var} {'>' if open_ else '>='} {lo:g}, "
                           f"got {float(v[bad].flatten()[0]):g}")

    def check_targets(self, lo: float) -> None:
        """Fail early if a task's smallest target is outside f's domain."""
        self._check(_as_f64([lo]), self.x_lo, "forward", "x")

    def forward(self, x) -> torch.Tensor:
        """f(x) in float64; OLHError if any x is outside f's domain."""
        x = _as_f64(x)
        self._check(x, self.x_lo, "forward", "x")
        return self.f(x)

    def inverse(self, y) -> torch.Tensor:
        """f⁻¹(y) in float64; OLHError if any y is outside f⁻¹'s domain."""
        y = _as_f64(y)
        self._check(y, self.y_lo, "inverse", "y")
        return self.finv(y)

    def to_target(self, y) -> tuple[torch.Tensor, torch.Tensor]:
        """Model outputs -> target-space predictions. Outputs outside f⁻¹'s domain are clamped to
        y_clamp first (see the module docstring); returns (f⁻¹(clamped y), bool mask of clamped)."""
        y = _as_f64(y)
        lo, hi = self.y_clamp
        yc = y.clamp(min=lo, max=hi) if (lo is not None or hi is not None) else y
        return self.finv(yc), yc != y


def _cbrt(y: torch.Tensor) -> torch.Tensor:
    return torch.sign(y) * y.abs().pow(1.0 / 3.0)


def _register(name: str, help: str, *args, **kw) -> None:
    REPARAMS.register(name, help=help)(Reparam(name, *args, **kw))


_register("identity", "f(l)=l (raw target)", lambda x: x, lambda y: y)
_register("sqrt", "f(l)=√l, f⁻¹(y)=y², y >= 0 (paper)", torch.sqrt, torch.square,
          x_lo=(0.0, False), y_lo=(0.0, False), y_clamp=(0.0, None))
_register("log", "f(l)=log l, f⁻¹(y)=exp y (paper)", torch.log, torch.exp, x_lo=(0.0, True), y_clamp=(None, 700.0))
_register("inv_sqrt", "f(l)=1/√l, f⁻¹(y)=1/y², y > 0 (paper)", torch.rsqrt, lambda y: 1.0 / torch.square(y),
          x_lo=(0.0, True), y_lo=(0.0, True), y_clamp=(1e-3, None))
_register("square", "f(l)=l², f⁻¹(y)=√y, y >= 0 (grows faster: ablation)", torch.square, torch.sqrt,
          x_lo=(0.0, False), y_lo=(0.0, False), y_clamp=(0.0, None))
_register("cube", "f(l)=l³, f⁻¹(y)=∛y (grows faster: ablation)", lambda x: x ** 3, _cbrt)
