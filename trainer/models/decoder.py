"""GPT-style decoder-only language model: pre-norm blocks, SDPA attention, tied embeddings, the
positional encoding chosen by name (positional.py). Losses live in trainer/alignment/."""
from __future__ import annotations

import torch
import torch.nn as nn

from trainer.models.layers import Block, KVCache, TiedLM
from trainer.models.registry import MODELS


@MODELS.register("decoder", help="GPT-style causal Transformer")
class DecoderLM(TiedLM):
    kind = "causal"  # lm-eval backend: tokens in, next-token logits out

    def __init__(self, cfg):
        super().__init__(cfg)
        self.blocks = nn.ModuleList(Block(cfg, causal=True, cross=False, n_layer_for_init=cfg.n_layer)
                                    for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks))

    def forward(self, tokens: torch.Tensor, *, return_hidden: bool = False, cache: KVCache | None = None,
                head: bool = True):
        """tokens: (B, T) int64 -> logits (B, T, V); with return_hidden also a list of n_layer
        hidden states (B, T, D), each after a parameter-free layer norm."""
        return self._run_blocks(self.blocks, tokens, cache, return_hidden, head)
