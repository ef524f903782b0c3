"""Golden losses: per-step losses of tiny seeded runs on the committed fixture, every family and
positional encoding, with and without alignment (tests/assets/golden_losses.json, written by
scripts/make_golden.py). The tolerance sits just above the float noise between machines and thread
counts (under 2e-6 measured), so a change to the numerics that matters fails: dropping RoPE from
the encoder-decoder moves encdec-rope by ~9e-5."""
import json

import pytest

from tests.helpers import GOLDEN, GOLDEN_RUNS, GOLDEN_STEPS, metrics, train_tiny

GOLD = json.loads(GOLDEN.read_text())
TOL = 1e-5


@pytest.mark.parametrize("name,over", GOLDEN_RUNS, ids=[n for n, _ in GOLDEN_RUNS])
def test_golden_losses(tmp_path, name, over):
    rows = metrics(train_tiny(tmp_path / "r", max_steps=GOLDEN_STEPS, **over))
    assert [r["step"] for r in rows] == list(range(1, GOLDEN_STEPS + 1))
    assert [r["loss"] for r in rows] == pytest.approx(GOLD[name]["loss"], abs=TOL)
    if over.get("alpha", 0.1):
        assert [r["mis"] for r in rows] == pytest.approx(GOLD[name]["mis"], abs=TOL)
