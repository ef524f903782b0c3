"""Per-step metrics of a training run: metrics.jsonl, the --report_to sinks, the progress bar, MFU.

Each step's numbers stay device tensors until a logging step (or a checkpoint, or the end) reads all
pending rows back in one transfer; a non-finite loss then stops the run after the rows before it."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from trainer.errors import OLHError
from trainer.flops import peak_flops, step_flops
from trainer.reporters import Reporters


class MetricsLog:
    def __init__(self, tr, step: int):
        from tqdm import tqdm
        cfg, rt = tr.cfg, tr.rt
        self.cfg, self.rt, self.device_timed = cfg, rt, rt.device.type != "cpu"
        n_views = 2 if tr.obj.two_branch else 1
        view_tokens = cfg.data.seq_len + (cfg.data.tgt_len if tr.model.kind == "seq2seq" else 0)
        self.tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * view_tokens * n_views * rt.world
        lm = hasattr(tr.obj, "views")  # the synthetic tasks' scalar objective has no FLOP count
        self.flops = step_flops(cfg, tr.obj, tr.model.kind, rt.world) if lm else None
        peak = peak_flops(cfg, rt.device, rt.dtype)
        self.peak = peak * rt.world if peak and lm else None
        self.tps_hist, self.mfu_hist, self.last, self.pending = [], [], {}, []
        self.t_flush = time.perf_counter()
        self.file = open(Path(tr.out) / "metrics.jsonl", "a") if rt.main else None
        self.sinks = Reporters(cfg.train.report_to, Path(tr.out), cfg.to_dict()) if rt.main else None
        self.bar = tqdm(total=cfg.train.max_steps, initial=step, disable=not rt.main,
                        desc=f"train {cfg.model.arch}", dynamic_ncols=True, mininterval=1.0)

    def step(self, step: int, loss: torch.Tensor, m: dict, lr: float, dt: float) -> None:
        """Record one optimizer step (dt: host seconds it took); flushes on logging steps."""
        self.pending.append((step, loss, m, lr, dt))
        self.bar.update(1)
        if step % self.cfg.train.log_every == 0 or step == self.cfg.train.max_steps:
            self.flush()

    def flush(self) -> None:
        """Read the pending steps' numbers back (one host-device transfer) and write their rows."""
        if not self.pending:
            return
        self.rt.sync()
        now, n = time.perf_counter(), len(self.pending)
        mean_dt = (now - self.t_flush) / n  # on a device, host time per step is not device time
        keys = [k for k, v in self.pending[0][2].items() if torch.is_tensor(v)]
        vals = torch.stack([torch.stack([p[1].float(), *(p[2][k].float() for k in keys)])
                            for p in self.pending]).tolist()
        pending, self.pending, self.t_flush = self.pending, [], now
        for (step, _, m, lr, dt), (loss, *rest) in zip(pending, vals):
            if not np.isfinite(loss):
                raise OLHError(f"loss became {loss} at step {step}; lower --lr or check the data")
            dt = mean_dt if self.device_timed else dt
            row = {"step": step, "loss": loss, **{k: v for k, v in m.items() if k not in keys},
                   **dict(zip(keys, rest)), "lr": lr,
                   "tokens_per_s": self.tokens_per_step / dt, "step_ms": 1e3 * dt,
                   "mfu": self.flops / dt / self.peak if self.peak else None}
            self.write(row)
        last = self.last
        self.bar.set_postfix(loss=f"{last['loss']:.4f}", **({"mis": f"{last['mis']:.3f}"} if "mis" in last else {}),
                             tok_s=f"{last['tokens_per_s']:.0f}")

    def write(self, row: dict) -> None:
        self.last = row
        self.tps_hist.append(row["tokens_per_s"])
        if row["mfu"] is not None:
            self.mfu_hist.append(row["mfu"])
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
            self.sinks.log(row)

    def summary(self) -> dict:
        last = self.last
        return {"final_loss": last.get("loss"), "final_lm_loss": last.get("lm_loss"),
                "tokens_per_s": float(np.median(self.tps_hist)) if self.tps_hist else None,
                "mfu": float(np.median(self.mfu_hist)) if self.mfu_hist else None,
                "model_flops_per_step": self.flops}

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()
            self.sinks.close()
