"""Regenerate tests/assets/golden_losses.json (per-step losses of tiny seeded runs on the fixture).

    OLH_AUSTEN=tests/assets/austen/Rdata.rdb python -m scripts.make_golden

Only run this when a change is *meant* to alter training numerics; say so in the commit message.
"""
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OLH_AUSTEN", str(Path(__file__).parent.parent / "tests/assets/austen/Rdata.rdb"))

from tests.helpers import GOLDEN, GOLDEN_RUNS, GOLDEN_STEPS, metrics, train_tiny  # noqa: E402

out = {}
for name, over in GOLDEN_RUNS:
    with tempfile.TemporaryDirectory() as d:
        train_tiny(Path(d) / "run", max_steps=GOLDEN_STEPS, **over)
        rows = metrics(Path(d) / "run")
        out[name] = {"overrides": over, "loss": [r["loss"] for r in rows],
                     "mis": [r.get("mis") for r in rows]}
GOLDEN.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {GOLDEN} ({len(out)} runs)")
