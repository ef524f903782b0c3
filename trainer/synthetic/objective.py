"""The synthetic tasks as a task kind of the trainer (`--task mean|length --head scalar`).

Loss = MSE on the standardized reparameterized target. With alpha > 0 (or --pair_windows) a short
view x[e:] ending on the same bit is scored too, and loss = mean(MSE(long), MSE(short)) + alpha *
D(y_long, y_short): the long-short misalignment of docs/method.md on a scalar. `evaluate` scores a
run on every test length 1..test_len, in target space."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from trainer.alignment.schedules import SCHEDULES, alpha_at
from trainer.errors import OLHError
from trainer.models import build_model
from trainer.registry import Registry
from trainer.synthetic.reparam import REPARAMS
from trainer.synthetic.tasks import TASKS, BitSampler, eval_generator, sample_bits, target_stats

SCALAR_DIVERGENCES = Registry("scalar divergence")
SCALAR_DIVERGENCES.register("l2", help="(a - b)^2")(lambda a, b: (a - b).pow(2))
SCALAR_DIVERGENCES.register("l1", help="|a - b|")(lambda a, b: (a - b).abs())
VOCAB_SIZE = 3  # bits 0, 1 and BOS (trainer/models/scalar.py)


def draw_extra(gen: torch.Generator, length: int, extra_frac: float) -> int:
    """e ~ U{1..max(1, floor(extra_frac * length))}, capped at length - 1; 0 when length == 1."""
    if length < 2:
        return 0
    hi = min(length - 1, max(1, int(extra_frac * length)))
    return int(torch.randint(1, hi + 1, (1,), generator=gen))


class ScalarObjective:
    def __init__(self, cfg):
        d, self.a = cfg.data, cfg.align
        self.task, self.rp = TASKS.get(d.task), REPARAMS.get(d.reparam)
        self.div = SCALAR_DIVERGENCES.get(self.a.divergence)
        SCHEDULES.get(self.a.alpha_schedule)
        self.L, self.total = d.seq_len, cfg.train.max_steps
        self.mu, self.sigma = target_stats(d.task, d.reparam, d.min_len, d.seq_len, d.target_norm)
        self.align_on = max(self.alpha(s) for s in range(self.total + 1)) > 0
        self.two_branch = self.align_on or self.a.pair_windows

    def alpha(self, step: int) -> float:
        return alpha_at(step, self.total, self.a, self.L)

    def z(self, bits: torch.Tensor, device) -> torch.Tensor:
        return ((self.rp.forward(self.task.target(bits.cpu())) - self.mu) / self.sigma).float().to(device)

    def __call__(self, model, bits: torch.Tensor, step: int, gen: torch.Generator, sync=lambda: None):
        """bits: (B, l). Returns (loss, metrics dict of floats)."""
        t0 = time.perf_counter()
        pred = model(bits)
        fit = F.mse_loss(pred, self.z(bits, pred.device))
        m = {"fwd_ms_long": 1e3 * (time.perf_counter() - t0)}
        e = draw_extra(gen, bits.shape[1], self.a.extra_frac) if self.two_branch else 0
        if e == 0:
            m["mse"] = fit.item()
            return fit, m
        pred_s = model(bits[:, e:])
        fit = 0.5 * (fit + F.mse_loss(pred_s, self.z(bits[:, e:], pred.device)))
        m.update(mse=fit.item(), l_extra=e)
        if not self.align_on:
            return fit, m
        mis, alpha = self.div(pred, pred_s).mean(), self.alpha(step)
        m.update(mis=mis.item(), alpha=alpha)
        return fit + alpha * mis, m


def check(cfg) -> None:
    """Everything a synthetic run needs from its config, checked before training starts."""
    d, mc = cfg.data, cfg.model
    if d.task not in TASKS:
        raise OLHError(f"unknown task '{d.task}'; valid: lm, {', '.join(TASKS.names())}")
    if mc.head != "scalar":
        raise OLHError(f"--task {d.task} predicts a number: it needs --head scalar")
    if not 1 <= d.min_len <= d.seq_len:
        raise OLHError(f"need 1 <= min_len <= seq_len, got {d.min_len}, {d.seq_len}")
    if d.test_len < 1 or d.eval_samples < 1:
        raise OLHError(f"test_len and eval_samples must be >= 1, got {d.test_len}, {d.eval_samples}")
    if d.target_norm not in ("standardize", "none"):
        raise OLHError(f"unknown target_norm '{d.target_norm}'; valid: standardize, none")
    if mc.pe == "learned" and mc.arch != "rnn" and mc.max_positions < d.test_len + mc.bos:
        raise OLHError(f"max_positions={mc.max_positions} is shorter than the longest test input "
                       f"({d.test_len} bits{' + BOS' if mc.bos else ''})")
    if cfg.train.init_from or cfg.train.deepspeed:
        raise OLHError(f"--task {d.task} trains from scratch on plain torch: drop --init_from/--deepspeed")
    task, rp = TASKS.get(d.task), REPARAMS.get(d.reparam)
    try:
        rp.check_targets(task.min_target)
    except OLHError as e:
        raise OLHError(f"{e} (the smallest {d.task} target is {task.min_target:g}; "
                       f"reparam {d.reparam} cannot be used with --task {d.task})") from None


def build(cfg, rank: int = 0):
    """(model, objective, sampler) of a synthetic run; the trainer does the rest."""
    check(cfg)
    cfg.model.vocab_size = VOCAB_SIZE
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    return model, ScalarObjective(cfg), BitSampler(cfg.train.batch_size, cfg.data.min_len, cfg.data.seq_len,
                                                   cfg.train.seed, rank)


@torch.no_grad()
def evaluate(model, cfg) -> dict:
    """{'mse@l': MSE in target space, 'clamped@l': share of outputs clamped into f⁻¹'s domain} for every
    test length l, and 'mse_train': the MSE averaged over the training lengths."""
    d = cfg.data
    task, rp = TASKS.get(d.task), REPARAMS.get(d.reparam)
    mu, sigma = target_stats(d.task, d.reparam, d.min_len, d.seq_len, d.target_norm)
    dev = next(model.parameters()).device
    out = {}
    for n in range(1, d.test_len + 1):
        bits = sample_bits(eval_generator(d.eval_seed, n), d.eval_samples, n)
        pred, clamped = rp.to_target(model(bits.to(dev)).double().cpu() * sigma + mu)
        out[f"mse@{n}"] = float((pred - task.target(bits)).pow(2).mean())
        out[f"clamped@{n}"] = float(clamped.double().mean())
    train_range = range(d.min_len, min(d.seq_len, d.test_len) + 1)
    out["mse_train"] = sum(out[f"mse@{n}"] for n in train_range) / len(train_range)
    return out
