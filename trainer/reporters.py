"""Metric sinks beside metrics.jsonl (--report_to): classes built with (run directory, config dict) that
`log` each row and are closed at the end. Only rank 0 reports."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from trainer.errors import OLHError
from trainer.registry import Registry

REPORTERS = Registry("reporter")


@REPORTERS.register("none", help="metrics.jsonl only")
class NoReport:
    def __init__(self, out: Path, config: dict):
        pass

    def log(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


@REPORTERS.register("csv", help="metrics.csv in the run directory (columns fixed by the first row)")
class CSVReport(NoReport):
    def __init__(self, out: Path, config: dict):
        self.path, self.file, self.writer = out / "metrics.csv", None, None

    def log(self, row: dict) -> None:
        if self.writer is None:
            new = not self.path.exists()
            self.file = open(self.path, "a", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row), extrasaction="ignore")
            if new:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


@REPORTERS.register("tensorboard", help="TensorBoard event files in <out>/tensorboard")
class TensorBoardReport(NoReport):
    def __init__(self, out: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(out / "tensorboard"))

    def log(self, row: dict) -> None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        self.writer.close()


@REPORTERS.register("wandb", help="Weights & Biases; offline unless WANDB_MODE says otherwise (needs `pip install wandb`)")
class WandbReport(NoReport):
    def __init__(self, out: Path, config: dict):
        try:
            import wandb
        except ImportError:
            raise OLHError("--report_to wandb needs the wandb package: pip install wandb") from None
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "olharness"), dir=str(out), config=config,
                              mode=os.environ.get("WANDB_MODE", "offline"), name=out.name)

    def log(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        self.run.finish()


class Reporters:
    """The sinks named in a --report_to list, fanned out."""

    def __init__(self, spec: str, out: Path, config: dict):
        self.sinks = [cls(out, config) for cls in self.check(spec)]

    @staticmethod
    def check(spec: str) -> list:
        """The classes a --report_to list names; an unknown name is an error before anything opens."""
        return [REPORTERS.get(n) for n in (s.strip() for s in spec.split(",")) if n and n != "none"]

    def log(self, row: dict) -> None:
        for s in self.sinks:
            s.log(row)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
