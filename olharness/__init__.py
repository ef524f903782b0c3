"""olharness: the lm-evaluation-harness plugin of this project.

- ``ol`` (``olharness.model.OLM``): any checkpoint of ours (decoder, encoder-decoder, RNN) as an
  lm-eval model; ``hf-lsm`` (``olharness.lsm.HFLSM``): lm-eval's ``hf`` model plus the exact LSM.
- tasks (``tasks/``): ``olh_lsm`` (+ length-range variants, ``olh_lsm_ll`` approximation),
  ``olh_ppl_len``, ``olh_longbench_e``, ``olh_mini_lc``.
- ``olharness`` console script (``olharness.cli``): the ``lm_eval`` command line with our model
  registered and our tasks on the include path.
- ``olharness.export_hf``: a decoder checkpoint as a Hugging Face model directory.

Importing the package only registers our model names with lm-eval (lazy placeholders, no torch
import); see ``olharness.registration``.
"""
from olharness.registration import TASKS_DIR, register_models

__version__ = "0.1.0"

register_models()

__all__ = ["TASKS_DIR", "register_models", "__version__"]
