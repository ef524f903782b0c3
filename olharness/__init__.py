"""olharness: the lm-evaluation-harness plugin of this project (models ``ol``, ``hf-lsm``, ``hf-mid``; the
tasks under ``tasks/``; the ``olharness`` command; ``olharness.export_hf``).

Importing the package only registers our model names with lm-eval (lazy placeholders, no torch
import); see ``olharness.registration``."""
from olharness.registration import TASKS_DIR, register_models

__version__ = "0.1.0"

register_models()

__all__ = ["TASKS_DIR", "register_models", "__version__"]
