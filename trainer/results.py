"""One row per finished cell of a grid: `ResultRow`, and the one reader/writer of results.jsonl.

    rows = read_rows(grid_dir / "results.jsonl")     # {cell_id: ResultRow}, the last line of a cell wins
    append_row(grid_dir / "results.jsonl", row)      # one line, flushed: the runner's resume point"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import OLHError


@dataclass
class ResultRow:
    cell_id: str  # hash of the non-default settings (config.hashed_fields); `pretrain-` for pretraining runs
    grid: str  # the grid's name
    overrides: dict  # the settings this cell sets on top of the grid's base (without the seed)
    seed: int
    config: dict  # the run's resolved config as saved with its checkpoint (RunConfig.to_dict())
    train: dict  # the trainer's summary.json (steps, final_loss, tokens_per_s, wall_s, ...)
    final_lm_loss: float | None = None  # mean LM loss over the last logged steps (None for synthetic tasks)
    eval: dict = field(default_factory=dict)  # {'task/metric': value} of lm-eval or {'mse@l': ...}; None: not a number
    scored_with: dict = field(default_factory=dict)  # {lm-eval task: the divergence its LSM was scored with}
    wall_s: float = 0.0
    run_dir: str = ""

    @property
    def is_pretrain(self) -> bool:
        """A grid's pretraining run (the starting point of its cells), not a cell of the grid."""
        return self.cell_id.startswith("pretrain-")

    def value(self, key: str) -> float | None:
        """A metric of this row ('final_lm_loss' or an eval key); None when missing or NaN."""
        v = self.final_lm_loss if key == "final_lm_loss" else self.eval.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    def setting(self, name: str, section: str, default=None):
        """A resolved config field of this run."""
        return self.config.get(section, {}).get(name, default)


def read_rows(path: str | Path) -> dict[str, ResultRow]:
    """{cell_id: row} in first-seen order, the last line of a cell winning. A last line cut short by a
    crash is dropped (its cell reruns); any other malformed line is an error naming it."""
    path = Path(path)
    if not path.exists():
        return {}
    text = path.read_text()
    lines = text.splitlines()
    rows = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = ResultRow(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as e:
            if i == len(lines) and not text.endswith("\n"):  # an append cut short: drop it
                path.write_text("".join(ln + "\n" for ln in lines[:-1]))
                break
            raise OLHError(f"{path}:{i} is not a result row ({str(e).splitlines()[0]}); fix or delete that line") from None
        rows[row.cell_id] = row
    return rows


def append_row(path: str | Path, row: ResultRow) -> None:
    """One write(2) on an O_APPEND file, synced: rows never interleave, a kill tears at most this one."""
    import os
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(dataclasses.asdict(row)) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def flatten_results(res: dict) -> dict:
    """lm-eval's results JSON -> {'task/metric': float}, dropping stderr entries and non-numbers."""
    flat = {}
    for task, metrics in res.get("results", {}).items():
        for key, v in metrics.items():
            if key == "alias" or "_stderr" in key or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            v = float(v)  # NaN/inf (e.g. an empty length bucket) -> None: results.jsonl stays strict JSON
            flat[f"{task}/{key.split(',')[0]}"] = v if math.isfinite(v) else None
    return flat


def scored_with(res: dict) -> dict:
    """{task: divergence} of the lm-eval tasks that record the divergence they scored (the LSM tasks)."""
    out = {}
    for task, conf in res.get("configs", {}).items():
        meta = conf.get("metadata") or {}
        if task in res.get("results", {}) and meta.get("divergence"):
            kl = meta["divergence"] == "kl" and meta.get("kl_direction")
            out[task] = str(meta["divergence"]) + (f" {kl}" if kl else "")
    return out


def mean_tail(metrics_path: Path, key: str, n: int = 20) -> float | None:
    """Mean of the last n logged values: a steadier 'final training loss' than one noisy step."""
    if not metrics_path.exists():
        return None
    vals = [json.loads(x).get(key) for x in metrics_path.read_text().splitlines() if x.strip()]
    vals = [v for v in vals if v is not None][-n:]
    return sum(vals) / len(vals) if vals else None
