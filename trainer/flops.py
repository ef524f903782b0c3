"""Model FLOPs per training step and MFU: 6 FLOPs per parameter per token plus attention's two T x T
products (PaLM, appendix B); embeddings, norms and activations are left out, as other trainers do.
The peak is --peak_tflops or, on a GPU, PEAK_BF16_TFLOPS (vendors' dense bf16 figures)."""
from __future__ import annotations

import torch

# device-name substring -> dense bf16 TFLOP/s (first match wins, so "H100 PCIe" precedes "H100")
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def _blocks(d: int, r: int) -> int:
    """Multiply-adds per token of one self-attention block's projections and MLP."""
    return 4 * d * d + 2 * r * d * d


def forward_flops(m, x_len: int, y_len: int = 0) -> float:
    """Forward FLOPs of one sequence: x_len tokens (the encoder's for encdec) and y_len decoder tokens."""
    d, V, r = m.d_model, m.vocab_size, m.mlp_ratio
    if m.arch == "rnn":
        gates = {"lstm": 4, "gru": 3}.get(m.cell, 4)
        return 2.0 * x_len * (m.n_layer * gates * 2 * d * d + d * V)
    if m.arch == "encdec":
        n_enc = m.n_enc_layer or m.n_layer
        S, T = x_len, y_len
        enc = 2.0 * S * n_enc * _blocks(d, r) + n_enc * 4.0 * S * S * d
        cross = 2.0 * (2 * T * d * d + S * 2 * d * d) + 4.0 * T * S * d  # q, proj; k, v on memory; scores
        dec = m.n_layer * (2.0 * T * _blocks(d, r) + 4.0 * T * T * d + cross)
        return enc + dec + 2.0 * T * d * V
    # decoder (and any causal transformer registered with the same shape fields)
    return 2.0 * x_len * (m.n_layer * _blocks(d, r) + d * V) + m.n_layer * 4.0 * x_len * x_len * m.d_model


def step_flops(cfg, obj, kind: str, world: int) -> float:
    """Model FLOPs of one optimizer step over all ranks: every view of every micro-batch, forward and
    backward, averaged over the l_extra draws for pairings whose view lengths depend on it."""
    m, L, tgt = cfg.model, cfg.data.seq_len, cfg.data.tgt_len
    if not obj.two_branch:
        per_seq = forward_flops(m, L, tgt if kind == "seq2seq" else 0)
    else:
        per_seq = 0.0
        for e in range(1, obj.extra_max + 1):
            for v in obj.views.cut(torch.zeros(1, obj.window, dtype=torch.long), *obj.pairing(L, e)):
                per_seq += forward_flops(m, v.args[0].shape[1], v.args[1].shape[1] if len(v.args) > 1 else 0)
        per_seq /= obj.extra_max
    return 3.0 * per_seq * cfg.train.batch_size * cfg.train.grad_accum * world


def peak_flops(cfg, device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of one device: --peak_tflops, else the table for a bf16 GPU, else None (CPU)."""
    if cfg.train.peak_tflops > 0:
        return cfg.train.peak_tflops * 1e12
    if device.type != "cuda" or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((v * 1e12 for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
