"""A scalar regression head on any model family (`--head scalar`; the LM head's logits are unused).

Causal models pool the last layer's (layer-normed) hidden states, encdec its encoder output, into Linear(D, 1). With
`bos`, a BOS token (id 2 of the bit vocabulary) gives even a model without positions an anchor to count from. Pooling:
last (causal default, the only position that saw every input), mean (encdec default) or first."""
from __future__ import annotations

import torch
import torch.nn as nn

from trainer.errors import OLHError

BOS = 2
POOLS = ("auto", "last", "mean", "first")


class ScalarModel(nn.Module):
    def __init__(self, backbone: nn.Module, cfg):
        super().__init__()
        if cfg.pool not in POOLS:
            raise OLHError(f"unknown pool '{cfg.pool}'; valid: {', '.join(POOLS)}")
        self.backbone = backbone
        self.kind = backbone.kind
        self.pool = cfg.pool if cfg.pool != "auto" else ("mean" if self.kind == "seq2seq" else "last")
        if self.pool == "first" and not cfg.bos:
            raise OLHError("pool=first reads the BOS position; it needs --bos true")
        self.bos = cfg.bos
        self.head = nn.Linear(cfg.d_model, 1)

    def tokens(self, bits: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full_like(bits[:, :1], BOS), bits], dim=1) if self.bos else bits

    def features(self, bits: torch.Tensor) -> torch.Tensor:
        """(B, l) bits -> (B, D) pooled features."""
        tok = self.tokens(bits)
        if self.kind == "seq2seq":
            h = self.backbone.encode(tok)                        # (B, T, D), after ln_enc
        else:
            _, hiddens = self.backbone(tok, return_hidden=True, head=False)  # no vocab projection
            h = hiddens[-1]                                      # (B, T, D), layer-normed
        if self.pool == "last":
            return h[:, -1]
        return h[:, 0] if self.pool == "first" else h.mean(dim=1)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        """(B, l) bits -> (B,) scalar outputs (in the standardized reparam space)."""
        return self.head(self.features(bits)).squeeze(-1)
