"""Synthetic length generalization (paper, Section 3): mean and length prediction on bit strings.

    python -m trainer.synthetic --help
    python -m trainer.synthetic --paper --workers 2      # the paper's figure, a few minutes on CPU

Registries (open to new entries): TASKS (tasks.py), REPARAMS (reparam.py), SCALAR_DIVERGENCES
(regularizer.py). The loop, outputs and CLI are in run.py; the scalar head in model.py.
Grids for the ablation runner (`kind: synthetic`, python -m trainer.ablate grids/synthetic.yaml) are in grid.py.
"""
from trainer.synthetic.regularizer import SCALAR_DIVERGENCES
from trainer.synthetic.reparam import REPARAMS
from trainer.synthetic.tasks import TASKS

__all__ = ["TASKS", "REPARAMS", "SCALAR_DIVERGENCES"]
