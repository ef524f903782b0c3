"""Positional encodings for the Transformer families, as a registry, plus RoPE context extension.

Each encoding acts through the hook it needs, so decoder.py and encdec.py never branch on its name: ``add_to_input``
(learned, sinusoidal), ``rotate`` (rope), ``attn_bias`` (alibi). Positions are absolute, so a KV cache passes ``offset +
arange(T)``. ``ROPE_SCALING``: none, pi (positions / s), ntk (base * s^(d/(d-2))), abf (base * s^2)."""
from __future__ import annotations

import torch
import torch.nn as nn

from trainer.errors import OLHError
from trainer.registry import Registry

POSITIONAL = Registry("positional encoding")
ROPE_SCALING = Registry("rope scaling method")


class PositionalEncoding(nn.Module):
    """Identity on all three hooks: this is `nope`."""

    max_positions: int | None = None  # None = any length

    def __init__(self, cfg):
        super().__init__()

    def add_to_input(self, h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return h

    def rotate(self, q, k, q_pos, k_pos):
        return q, k

    def attn_bias(self, q_pos, k_pos):
        return None


@POSITIONAL.register("nope", help="no positional information (causal mask only)")
class NoPE(PositionalEncoding):
    pass


@POSITIONAL.register("learned", help="learned absolute table of max_positions rows")
class Learned(PositionalEncoding):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.max_positions = cfg.max_positions
        self.table = nn.Embedding(cfg.max_positions, cfg.d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def add_to_input(self, h, pos):
        if int(pos.max()) >= self.max_positions:
            raise OLHError(f"position {int(pos.max())} is beyond the learned table of "
                           f"{self.max_positions} positions (max_positions)")
        return h + self.table(pos)


@POSITIONAL.register("sinusoidal", help="fixed sin/cos absolute encoding (Vaswani et al.)")
class Sinusoidal(PositionalEncoding):
    def __init__(self, cfg):
        super().__init__(cfg)
        d = cfg.d_model
        self.register_buffer("inv_freq", 1.0 / (10000.0 ** (torch.arange(0, d, 2).float() / d)), persistent=False)

    def add_to_input(self, h, pos):
        ang = pos.float()[:, None] * self.inv_freq[None, :]           # (T, d/2)
        enc = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)  # (T, d) interleaved
        return h + enc[:, : h.shape[-1]].to(h.dtype)


@POSITIONAL.register("rope", help="rotary embedding on q and k (with optional rope_scaling)")
class Rotary(PositionalEncoding):
    def __init__(self, cfg):
        super().__init__(cfg)
        hd = cfg.d_model // cfg.n_head
        inv_freq, self.pos_scale = ROPE_SCALING.get(cfg.rope_scaling)(cfg.rope_base, hd, cfg.rope_scale)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _cos_sin(self, pos, dtype):
        """(T, hd) tables: cos twice, and sin with the first half negated."""
        ang = (pos.float() / self.pos_scale)[:, None] * self.inv_freq[None, :]  # (T, hd/2)
        cos, sin = ang.cos(), ang.sin()
        return torch.cat([cos, cos], -1).to(dtype), torch.cat([-sin, sin], -1).to(dtype)

    @staticmethod
    def _rot(x, cos, sin):  # x: (B, H, T, hd); pairs (x1, x2) of the two halves -> (x1 cos - x2 sin, x2 cos + x1 sin)
        # bit-identical to rotating each half (a - b == a + (-b)); roll swaps the halves in one op, and a contiguous
        # x lets the (T, hd) tables broadcast over runs of T * hd elements instead of hd
        x = x.contiguous()
        return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin

    def rotate(self, q, k, q_pos, k_pos):
        cq, sq = self._cos_sin(q_pos, q.dtype)
        ck, sk = (cq, sq) if k_pos is q_pos else self._cos_sin(k_pos, k.dtype)
        return self._rot(q, cq, sq), self._rot(k, ck, sk)


@POSITIONAL.register("alibi", help="linear attention biases with geometric head slopes (Press et al.)")
class ALiBi(PositionalEncoding):
    def __init__(self, cfg):
        super().__init__(cfg)
        n = cfg.n_head
        # slopes 2^(-8/n * i), i = 1..n (the paper's recipe for a power-of-two head count;
        # used as-is for other counts, which keeps them distinct and decreasing)
        slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / n) for i in range(n)])
        self.register_buffer("slopes", slopes, persistent=False)

    def attn_bias(self, q_pos, k_pos):
        dist = (k_pos[None, :] - q_pos[:, None]).float()          # (Tq, Tk), <= 0 for the past
        return self.slopes[:, None, None] * -dist.abs()[None]      # (H, Tq, Tk)


# ---------- RoPE scaling: each returns (inv_freq, position_scale). Positions are divided by position_scale. ---
def _inv_freq(base: float, hd: int) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, hd, 2).float() / hd))


@ROPE_SCALING.register("none", help="plain RoPE")
def _none(base, hd, s):
    return _inv_freq(base, hd), 1.0


@ROPE_SCALING.register("pi", help="position interpolation: positions / rope_scale (Chen et al. 2023)")
def _pi(base, hd, s):
    return _inv_freq(base, hd), float(s)


@ROPE_SCALING.register("ntk", help="NTK-aware: base * rope_scale^(d/(d-2)), all frequencies change")
def _ntk(base, hd, s):
    return _inv_freq(base * s ** (hd / (hd - 2)), hd), 1.0


@ROPE_SCALING.register("abf", help="adjusted base frequency: base * rope_scale^2 (a large base, as in ABF/EABF)")
def _abf(base, hd, s):
    # ABF (Xiong et al. 2023) raises the base to a large fixed value (10k -> 500k for 4k -> 32k).
    # We tie it to the extension factor so one `rope_scale` means the same thing for every method.
    return _inv_freq(base * s ** 2, hd), 1.0


def check_positions(pe: PositionalEncoding, length: int, what: str = "seq_len") -> None:
    """Fail clearly when a length cannot be represented by a bounded encoding."""
    if pe.max_positions is not None and length > pe.max_positions:
        raise OLHError(f"{what}={length} is larger than the model's max_positions={pe.max_positions} "
                       f"(pe=learned); raise --max_positions or pick another --pe")
