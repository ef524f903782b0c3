"""The model-family registry (filled by decoder.py, encdec.py, rnn.py)."""
from trainer.registry import Registry

MODELS = Registry("model architecture")
