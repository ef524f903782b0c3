"""Tiny random-initialised Hugging Face causal LMs for the --arch hf tests (offline, nothing downloaded).

Each architecture gets a config small enough to train in a second, the committed byte-level BPE
tokenizer (tests/assets/hf_tokenizer/), and seeded random weights written with save_pretrained.
RoPE models hold 16 positions (max_position_embeddings) so that training at seq_len 32 with
rope_scale 2 really extends them (dynamic NTK, for one, only acts past the original length).
"""
from pathlib import Path

import torch

from tests.conftest import ASSETS
from trainer.config import preset

TOKENIZER = ASSETS / "hf_tokenizer"
_ROPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=16)
SIZES = {
    "llama": _ROPE,
    "qwen2": _ROPE,
    "mistral": _ROPE | {"sliding_window": None},
    "gpt_neox": dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=16),  # head_dim 16 x rotary 0.25 = 4 rotary dims
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128),
}


def make_hf_model(arch: str, out: Path, seed: int = 0) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    cfg = AutoConfig.for_model(arch, vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SIZES[arch])
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)


def hf_config(source, out="", **over):
    """The tiny preset as an --arch hf run on `source` (seq_len 32, 2x the models' 16 positions)."""
    cfg = preset("tiny")
    cfg.set("arch", "hf")
    cfg.set("init_from", str(source))
    cfg.set("seq_len", 32)
    cfg.set("out", str(out))
    for k, v in over.items():
        cfg.set(k, v)
    return cfg
