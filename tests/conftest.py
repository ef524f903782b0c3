"""Shared fixtures. Every test runs offline on the committed Austen fixture (never apt, never a hub)."""
import os
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
REPO = Path(__file__).parent.parent
os.environ["OLH_AUSTEN"] = str(ASSETS / "austen" / "Rdata.rdb")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """tiny_run(arch="decoder", pe="rope", **config_overrides) -> run dir of a trained tiny model
    (trained once per distinct argument set per session)."""
    from tests.helpers import train_tiny
    made = {}

    def make(arch="decoder", pe="rope", **over):
        key = (arch, pe, tuple(sorted(over.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"run-{arch}-{pe}")
            train_tiny(out, arch=arch, pe=pe, **over)
            made[key] = out
        return made[key]
    return make


pytest_plugins = ["tests.conftest_olh"]
