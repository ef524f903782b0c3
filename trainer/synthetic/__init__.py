"""Synthetic length generalization (paper, Section 3) as a task kind of the trainer
(`python -m trainer.train --preset synthetic --task mean`): TASKS, REPARAMS, SCALAR_DIVERGENCES."""
from trainer.synthetic.reparam import REPARAMS
from trainer.synthetic.tasks import TASKS

__all__ = ["TASKS", "REPARAMS"]
