"""A scalar regression head on any model family (the LM head and logits are unused).

    causal (decoder, rnn): last layer's hidden state (layer-normed) at the pooled position(s) -> Linear(D, 1)
    seq2seq (encdec):      encoder output (`model.encode`) pooled -> Linear(D, 1); the decoder is unused

Inputs are bit sequences (B, l) of token ids 0/1; with `bos` a BOS token (id 2) is put in front,
so even a NoPE model has an anchor it can count from. Pooling: `last` position (default for causal
models: the only position that has seen every bit), `mean` over positions (default for encdec), or
`first` (the BOS/CLS position of a bidirectional encoder).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from trainer.errors import OLHError
from trainer.models import build_model

BIT0, BIT1, BOS = 0, 1, 2
VOCAB_SIZE = 3
POOLS = ("auto", "last", "mean", "first")


class ScalarModel(nn.Module):
    def __init__(self, model_cfg, pool: str = "auto", bos: bool = True):
        super().__init__()
        if pool not in POOLS:
            raise OLHError(f"unknown pool '{pool}'; valid: {', '.join(POOLS)}")
        model_cfg = dataclasses.replace(model_cfg, vocab_size=VOCAB_SIZE)
        self.backbone = build_model(model_cfg)
        self.kind = self.backbone.kind
        self.pool = pool if pool != "auto" else ("mean" if self.kind == "seq2seq" else "last")
        if self.pool == "first" and not bos:
            raise OLHError("pool=first reads the BOS position; it needs bos=true")
        self.bos = bos
        self.head = nn.Linear(model_cfg.d_model, 1)

    def tokens(self, bits: torch.Tensor) -> torch.Tensor:
        if not self.bos:
            return bits
        return torch.cat([torch.full_like(bits[:, :1], BOS), bits], dim=1)

    def features(self, bits: torch.Tensor) -> torch.Tensor:
        """(B, l) bits -> (B, D) pooled features."""
        tok = self.tokens(bits)
        if self.kind == "seq2seq":
            h = self.backbone.encode(tok)                        # (B, T, D), after ln_enc
        else:
            _, hiddens = self.backbone(tok, return_hidden=True)
            h = hiddens[-1]                                      # (B, T, D), layer-normed
        if self.pool == "last":
            return h[:, -1]
        if self.pool == "first":
            return h[:, 0]
        return h.mean(dim=1)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        """(B, l) bits -> (B,) scalar outputs (in the standardized reparam space)."""
        return self.head(self.features(bits)).squeeze(-1)
