"""Recurrent language model: embedding -> stacked LSTM or GRU layers (pre-norm, residual) -> tied head.

RNNs have no positions, so the long/short views differ only in how many tokens the state has seen:
the cleanest test of context-length effects. `--pe` is ignored here."""
from __future__ import annotations

import torch
import torch.nn as nn

from trainer.errors import OLHError
from trainer.models.layers import TiedLM
from trainer.models.registry import MODELS
from trainer.registry import Registry

CELLS = Registry("rnn cell")
CELLS.register("lstm", help="long short-term memory")(nn.LSTM)
CELLS.register("gru", help="gated recurrent unit")(nn.GRU)


class RNNState:
    """Per-layer recurrent states for incremental decoding (same role as a KV cache)."""

    def __init__(self, n_layer: int):
        self.states: list = [None] * n_layer  # LSTM: (h, c); GRU: h; each (1, B, D)
        self.length = 0


@MODELS.register("rnn", help="stacked LSTM/GRU language model (--cell)")
class RNNLM(TiedLM):
    kind = "causal"
    max_positions = None

    def __init__(self, cfg):
        cell = CELLS.get(cfg.cell)
        super().__init__(cfg, pe=False)
        D = cfg.d_model
        self.norms = nn.ModuleList(nn.LayerNorm(D) for _ in range(cfg.n_layer))
        # one module per layer (not num_layers=N) so every layer's output is available for hidden-state alignment
        self.layers = nn.ModuleList(cell(D, D, batch_first=True) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(D)

    def new_cache(self) -> RNNState:
        return RNNState(len(self.layers))

    def forward(self, tokens: torch.Tensor, *, return_hidden: bool = False, cache: RNNState | None = None,
                head: bool = True):
        """tokens: (B, T) -> logits (B, T, V) (+ per-layer normalized hidden states (B, T, D))."""
        if tokens.shape[1] == 0:
            raise OLHError("rnn forward needs at least one token")
        h = self.drop(self.wte(tokens))  # (B, T, D)
        hiddens = []
        for i, (norm, rnn) in enumerate(zip(self.norms, self.layers)):
            out, state = rnn(norm(h), cache.states[i] if cache is not None else None)
            if cache is not None:
                cache.states[i] = state
            h = h + self.drop(out)
            if return_hidden:
                hiddens.append(nn.functional.layer_norm(h, h.shape[-1:]))
        if cache is not None:
            cache.length += tokens.shape[1]
        return self._finish(h, hiddens, return_hidden, head)
