"""Synthetic length generalization (paper, Section 3): mean and length prediction on bit strings, as a
task kind of the trainer (`python -m trainer.train --preset synthetic --task mean`).

Registries (open to new entries): TASKS (tasks.py), REPARAMS (reparam.py), SCALAR_DIVERGENCES
(objective.py). The scalar head is trainer/models/scalar.py; grids run through trainer.ablate
(grids/synthetic*.yaml); `python -m trainer.synthetic --paper` runs the paper's figure.
"""
from trainer.synthetic.reparam import REPARAMS
from trainer.synthetic.tasks import TASKS

__all__ = ["TASKS", "REPARAMS"]
