"""Helpers shared by tests and by scripts/make_golden.py (which writes tests/assets/golden_losses.json)."""
import json
from pathlib import Path

from trainer.config import preset
from trainer.train import train

GOLDEN = Path(__file__).parent / "assets" / "golden_losses.json"

# (name, overrides) of every golden run: each family x PE with alpha = 0, plus the default alignment
GOLDEN_RUNS = [(f"{arch}-{pe}", dict(arch=arch, pe=pe, alpha=0.0))
               for arch in ("decoder", "encdec") for pe in ("nope", "learned", "sinusoidal", "rope", "alibi")]
GOLDEN_RUNS += [(f"rnn-{cell}", dict(arch="rnn", cell=cell, alpha=0.0)) for cell in ("lstm", "gru")]
GOLDEN_RUNS += [(f"{arch}-align-default", dict(arch=arch)) for arch in ("decoder", "encdec", "rnn")]
GOLDEN_STEPS = 6


def train_tiny(out, stop_at=None, **over):
    cfg = preset("tiny")
    cfg.train.out = str(out)
    for k, v in over.items():
        cfg.set(k, v)
    train(cfg, stop_at=stop_at)
    return out


def metrics(run_dir) -> list[dict]:
    return [json.loads(x) for x in Path(run_dir, "metrics.jsonl").read_text().splitlines() if x.strip()]
