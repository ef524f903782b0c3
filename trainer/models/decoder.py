"""GPT-style decoder-only language model: pre-norm blocks, SDPA attention, tied embeddings, the
positional encoding chosen by name (positional.py). Losses live in trainer/alignment/."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.models.layers import Block, KVCache
from trainer.models.positional import POSITIONAL
from trainer.models.registry import MODELS


@MODELS.register("decoder", help="GPT-style causal Transformer")
class DecoderLM(nn.Module):
    kind = "causal"  # lm-eval backend: tokens in, next-token logits out

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.wte.weight, std=0.02)
        self.pe = POSITIONAL.get(cfg.pe)(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, causal=True, cross=False, n_layer_for_init=cfg.n_layer)
                                    for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    @property
    def max_positions(self) -> int | None:
        return self.pe.max_positions

    def output_head(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (.., D) -> logits (.., V): the tied embedding."""
        return F.linear(h, self.wte.weight)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks))

    def forward(self, tokens: torch.Tensor, *, return_hidden: bool = False, cache: KVCache | None = None,
                head: bool = True):
        """tokens: (B, T) int64 -> logits (B, T, V); with return_hidden also a list of n_layer
        hidden states (B, T, D), each after a parameter-free layer norm. With a cache, tokens continue
        the cached sequence (positions start at cache.length) and the cache is extended in place."""
        B, T = tokens.shape
        offset = cache.length if cache is not None else 0
        pos = torch.arange(offset, offset + T, device=tokens.device)
        h = self.drop(self.pe.add_to_input(self.wte(tokens), pos))  # (B, T, D)
        hiddens = []
        for i, blk in enumerate(self.blocks):
            h = blk(h, pos, self.pe, cache=cache.layers[i] if cache is not None else None)
            if return_hidden:
                hiddens.append(F.layer_norm(h, h.shape[-1:]))
        if cache is not None:
            cache.length += T
        h = self.ln_f(h)
        logits = self.output_head(h) if head else h  # head=False: (B, T, D), the caller picks positions
        return (logits, hiddens) if return_hidden else logits
