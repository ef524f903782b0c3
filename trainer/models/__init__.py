"""Model families behind one interface, chosen by name (`--arch`).

Causal models (decoder, rnn):  logits = model(tokens)                       # (B,T) -> (B,T,V)
Seq2seq (encdec):              logits = model(enc_tokens, dec_tokens, enc_mask=None)
All:  model(..., return_hidden=True) -> (logits, [hidden per layer]);  model.kind in
{"causal", "seq2seq"};  cache = model.new_cache(); model(..., cache=cache) decodes incrementally."""
from trainer.errors import OLHError
from trainer.models import decoder, encdec, hf, rnn  # noqa: F401  (fill the registry)
from trainer.models.positional import POSITIONAL, ROPE_SCALING, check_positions
from trainer.models.registry import MODELS
from trainer.models.rnn import CELLS
from trainer.models.scalar import ScalarModel
from trainer.registry import Registry

HEADS = Registry("head")
HEADS.register("lm", help="next-token logits")(lambda model, cfg: model)
HEADS.register("scalar", help="one regression output pooled from the last layer (trainer/models/scalar.py)")(ScalarModel)


def check_model_config(cfg) -> None:
    """Fail on names and values the family cannot build (a family may bring its own check_config)."""
    family = MODELS.get(cfg.arch)
    if hasattr(family, "check_config"):
        return family.check_config(cfg)
    ROPE_SCALING.get(cfg.rope_scaling)
    if cfg.rope_scaling != "none" and (cfg.pe != "rope" or cfg.arch == "rnn"):
        raise OLHError(f"rope_scaling={cfg.rope_scaling} needs a rope model (arch={cfg.arch}, pe={cfg.pe})")
    if cfg.rope_scale <= 0:
        raise OLHError(f"rope_scale={cfg.rope_scale} must be positive")


def build_model(cfg):
    """Instantiate the family named by cfg.arch (a trainer.config.ModelConfig). Pretrained families
    (arch=hf) are loaded with their own `load` instead (trainer/models/hf.py)."""
    check_model_config(cfg)
    return HEADS.get(cfg.head)(MODELS.get(cfg.arch)(cfg), cfg)


__all__ = ["HEADS", "MODELS", "POSITIONAL", "ROPE_SCALING", "CELLS", "build_model", "check_model_config", "check_positions"]
