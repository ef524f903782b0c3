"""Long-short alignment: every ablation axis is a registry here (docs/method.md, section 2)."""
from trainer.alignment.divergences import DIVERGENCES, build_divergence
from trainer.alignment.objective import Objective
from trainer.alignment.pairings import PAIRINGS
from trainer.alignment.schedules import SCHEDULES, alpha_at, length_factor
from trainer.alignment.scopes import SCOPES
from trainer.alignment.targets import TARGETS
from trainer.alignment.views import VIEWS

__all__ = ["DIVERGENCES", "PAIRINGS", "SCOPES", "TARGETS", "SCHEDULES", "VIEWS", "Objective", "alpha_at",
           "length_factor", "build_divergence"]
