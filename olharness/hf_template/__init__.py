"""Source files that ``olharness.export_hf`` copies into a Hugging Face export directory.

They are loaded there by transformers with ``trust_remote_code=True`` (next to ``olh_core.py``, the
model code bundled from ``trainer/``); they are not meant to be imported from this package.
"""
