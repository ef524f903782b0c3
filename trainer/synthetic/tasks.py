"""Synthetic length-generalization tasks (paper, Section 3) and their seeded generators.

Inputs are i.i.d. fair bits; ``mean`` predicts mean(x) (its range does not move with l), ``length`` predicts l (its
range grows with l). A torch.Generator fixes every batch; training draws one length per step, l ~ U{min_len..seq_len},
and a batch of that length (no padding). A new task (parity, majority) is one decorated ``Task``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from trainer.registry import Registry
from trainer.synthetic.reparam import REPARAMS

TASKS = Registry("synthetic task")


@dataclass(frozen=True)
class Task:
    name: str
    target: Callable[[torch.Tensor], torch.Tensor]  # (B, l) int bits -> (B,) float64 targets
    min_target: float  # the smallest possible target (checked against the reparam's domain before training)


def _register(name: str, help: str, target: Callable, min_target: float) -> None:
    TASKS.register(name, help=help)(Task(name, target, min_target))


_register("mean", "predict the mean of the bits (output range fixed in [0, 1])",
          lambda bits: bits.double().mean(dim=1), 0.0)
_register("length", "predict the number of bits l (output range grows with l)",
          lambda bits: torch.full((bits.shape[0],), float(bits.shape[1]), dtype=torch.float64), 1.0)


def sample_bits(gen: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """(batch, length) i.i.d. fair bits as int64 token ids 0/1."""
    return torch.randint(0, 2, (batch, length), generator=gen)


def sample_length(gen: torch.Generator, lo: int, hi: int) -> int:
    """One training length, uniform over the integers lo..hi (inclusive)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def eval_generator(eval_seed: int, length: int) -> torch.Generator:
    """The generator of the test set at one length: shared by every model and seed, so every model is scored on the same
    inputs (paired comparisons) and a length's test set does not depend on which other lengths are evaluated."""
    return torch.Generator().manual_seed(eval_seed * 100_003 + length)


class BitSampler:
    """The training batches of a synthetic task, with the trainer's sampler interface. Batch i is a
    function of (seed, rank, i) alone, so its state is one counter and --resume continues exactly."""

    def __init__(self, batch_size: int, min_len: int, max_len: int, seed: int, rank: int = 0):
        self.batch_size, self.min_len, self.max_len = batch_size, min_len, max_len
        self.seed, self.rank, self.i = seed, rank, 0

    def next_batch(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 1_000_033 + self.i)
        self.i += 1
        return sample_bits(gen, self.batch_size, sample_length(gen, self.min_len, self.max_len))

    def state_dict(self) -> dict:
        return {"i": self.i}

    def load_state_dict(self, d: dict) -> None:
        self.i = int(d["i"])


def target_stats(task: str, reparam: str, min_len: int, max_len: int, norm: str) -> tuple[float, float]:
    """(mu, sigma) of f(target) over the training distribution (every training length weighted
    equally, 1024 fixed-seed samples each); (0, 1) with target_norm none."""
    if norm == "none":
        return 0.0, 1.0
    t, r = TASKS.get(task), REPARAMS.get(reparam)
    g = torch.Generator().manual_seed(987_654_321)
    ys = torch.cat([r.forward(t.target(sample_bits(g, 1024, n))) for n in range(min_len, max_len + 1)])
    sd = float(ys.std())
    return float(ys.mean()), (sd if sd > 1e-12 else 1.0)
