"""Pieces the model families share: the tied-embedding base, attention with a KV cache, MLP, blocks.

The positional encoding is passed to every call rather than stored in each layer, so its parameters
(the `learned` table) live once, on the model."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.models.positional import POSITIONAL


class LayerCache:
    """Keys/values of one attention layer for incremental decoding."""

    def __init__(self):
        self.k: torch.Tensor | None = None  # (B, H, T_past, hd), already rotated
        self.v: torch.Tensor | None = None


class KVCache:
    """Per-layer caches plus the number of positions already consumed."""

    def __init__(self, n_layer: int):
        self.layers = [LayerCache() for _ in range(n_layer)]
        self.length = 0
        self.memory = None      # encdec: encoder output (B, S, D)
        self.enc_mask = None    # encdec: (B, S) bool, True = real token


class Attention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float, causal: bool, n_layer_for_init: int):
        super().__init__()
        assert d_model % n_head == 0, "d_model must be divisible by n_head"
        self.n_head, self.causal, self.dropout = n_head, causal, dropout
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        nn.init.normal_(self.q.weight, std=0.02)
        nn.init.normal_(self.kv.weight, std=0.02)
        # residual projections shrink with depth (GPT-2) so the stream's variance stays put
        nn.init.normal_(self.proj.weight, std=0.02 / math.sqrt(2 * n_layer_for_init))

    def _heads(self, x):  # (B, T, D) -> (B, H, T, hd)
        B, T, D = x.shape
        return x.view(B, T, self.n_head, D // self.n_head).transpose(1, 2)

    def forward(self, x, pos, pe=None, cache: LayerCache | None = None, kv_src=None, key_mask=None):
        """x: (B, T, D) queries; pos: (T,) their absolute positions. Self-attention when kv_src is
        None (pe applies), cross-attention over kv_src (B, S, D) otherwise (no pe).
        key_mask: (B, S) bool, True where a key may be attended (padding mask)."""
        q = self._heads(self.q(x))
        k, v = (self._heads(t) for t in self.kv(x if kv_src is None else kv_src).chunk(2, dim=-1))
        bias, k_pos = None, None
        if kv_src is None:
            k_pos = pos
            if pe is not None:
                q, k = pe.rotate(q, k, pos, pos)
            if cache is not None:
                if cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
                cache.k, cache.v = k, v
                k_pos = torch.arange(k.shape[2], device=x.device)
            if pe is not None:
                bias = pe.attn_bias(pos, k_pos)  # (H, Tq, Tk) or None
        Tq, Tk = q.shape[2], k.shape[2]
        use_is_causal = self.causal and bias is None and key_mask is None and Tq == Tk and Tq > 1
        mask = None
        if not use_is_causal and (bias is not None or key_mask is not None or (self.causal and Tq > 1)):
            mask = torch.zeros(1, 1, Tq, Tk, device=x.device, dtype=q.dtype)
            if bias is not None:
                mask = mask + bias[None].to(q.dtype)
            if self.causal and kv_src is None:
                mask = mask.masked_fill(k_pos[None, :] > pos[:, None], float("-inf"))
            if key_mask is not None:
                mask = mask.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=use_is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        B, H, T, hd = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, T, H * hd))


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: int, dropout: float, n_layer_for_init: int):
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model, bias=False)
        self.proj = nn.Linear(ratio * d_model, d_model, bias=False)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.normal_(self.proj.weight, std=0.02 / math.sqrt(2 * n_layer_for_init))

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, MLP, each with a residual."""

    def __init__(self, cfg, causal: bool, cross: bool, n_layer_for_init: int):
        super().__init__()
        D = cfg.d_model
        self.ln1 = nn.LayerNorm(D)
        self.attn = Attention(D, cfg.n_head, cfg.dropout, causal, n_layer_for_init)
        self.ln_x = nn.LayerNorm(D) if cross else None
        self.xattn = Attention(D, cfg.n_head, cfg.dropout, False, n_layer_for_init) if cross else None
        self.ln2 = nn.LayerNorm(D)
        self.mlp = MLP(D, cfg.mlp_ratio, cfg.dropout, n_layer_for_init)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h, pos, pe, cache=None, key_mask=None, memory=None, memory_mask=None):
        h = h + self.drop(self.attn(self.ln1(h), pos, pe, cache=cache, key_mask=key_mask))
        if self.xattn is not None:
            h = h + self.drop(self.xattn(self.ln_x(h), pos, kv_src=memory, key_mask=memory_mask))
        return h + self.mlp(self.ln2(h))


class TiedLM(nn.Module):
    """Base of the families: a tied token embedding (input and output head), dropout, and the causal
    block stack with its cache and per-layer hidden states. A subclass builds its layers and `ln_f`."""

    def __init__(self, cfg, pe: bool = True):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.wte.weight, std=0.02)
        if pe:
            self.pe = POSITIONAL.get(cfg.pe)(cfg)  # one module; encoder and decoder count positions from 0
        self.drop = nn.Dropout(cfg.dropout)

    @property
    def max_positions(self) -> int | None:
        return self.pe.max_positions

    def output_head(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (.., D) -> logits (.., V): the tied embedding."""
        return F.linear(h, self.wte.weight)

    def _run_blocks(self, blocks, tokens, cache, return_hidden: bool, head: bool, **block_kw):
        """The causal stack over tokens (B, T): with a cache they continue the cached sequence (positions
        start at cache.length) and the cache is extended in place."""
        T = tokens.shape[1]
        offset = cache.length if cache is not None else 0
        pos = torch.arange(offset, offset + T, device=tokens.device)
        h = self.drop(self.pe.add_to_input(self.wte(tokens), pos))  # (B, T, D)
        hiddens = []
        for i, blk in enumerate(blocks):
            h = blk(h, pos, self.pe, cache=cache.layers[i] if cache is not None else None, **block_kw)
            if return_hidden:
                hiddens.append(F.layer_norm(h, h.shape[-1:]))
        if cache is not None:
            cache.length += T
        return self._finish(h, hiddens, return_hidden, head)

    def _finish(self, h, hiddens, return_hidden: bool, head: bool):
        h = self.ln_f(h)
        logits = self.output_head(h) if head else h  # head=False: (B, T, D), the caller picks positions
        return (logits, hiddens) if return_hidden else logits
