"""T5-style encoder-decoder: bidirectional encoder, causal decoder with cross-attention, tied embeddings.
Used as a prefix LM: the encoder reads the context, the decoder predicts a continuation from BOS
(trainer/alignment/views.py). Positional encodings as in decoder.py; cross-attention has none."""
from __future__ import annotations

import torch
import torch.nn as nn

from trainer.models.layers import Block, KVCache, TiedLM
from trainer.models.registry import MODELS


@MODELS.register("encdec", help="T5-style encoder-decoder used as a prefix LM")
class EncDecLM(TiedLM):
    kind = "seq2seq"

    def __init__(self, cfg):
        super().__init__(cfg)
        n_enc = cfg.n_enc_layer or cfg.n_layer
        self.encoder = nn.ModuleList(Block(cfg, causal=False, cross=False, n_layer_for_init=n_enc)
                                     for _ in range(n_enc))
        self.ln_enc = nn.LayerNorm(cfg.d_model)
        self.decoder = nn.ModuleList(Block(cfg, causal=True, cross=True, n_layer_for_init=cfg.n_layer)
                                     for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.decoder))

    def encode(self, enc_tokens: torch.Tensor, enc_mask: torch.Tensor | None = None) -> torch.Tensor:
        """enc_tokens: (B, S) -> memory (B, S, D). enc_mask: (B, S) bool, True = real token."""
        pos = torch.arange(enc_tokens.shape[1], device=enc_tokens.device)
        h = self.drop(self.pe.add_to_input(self.wte(enc_tokens), pos))
        for blk in self.encoder:
            h = blk(h, pos, self.pe, key_mask=enc_mask)
        return self.ln_enc(h)

    def forward(self, enc_tokens: torch.Tensor | None, dec_tokens: torch.Tensor, *,
                enc_mask: torch.Tensor | None = None, return_hidden: bool = False,
                cache: KVCache | None = None, head: bool = True):
        """enc_tokens: (B, S), dec_tokens: (B, T) (BOS first) -> logits (B, T, V) for the next
        decoder token at each position. With a cache the encoder runs once (on the first call) and
        dec_tokens continue the cached decoder prefix."""
        if cache is not None and cache.memory is not None:
            memory, enc_mask = cache.memory, cache.enc_mask
        else:
            memory = self.encode(enc_tokens, enc_mask)  # (B, S, D)
            if cache is not None:
                cache.memory, cache.enc_mask = memory, enc_mask
        return self._run_blocks(self.decoder, dec_tokens, cache, return_hidden, head, memory=memory,
                                memory_mask=enc_mask)
