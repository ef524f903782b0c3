"""Reading and validating LongBench rows (THUDM ``data.zip`` layout: one ``<dataset>_e.jsonl`` each).

From task metadata ``longbench_dir`` (a folder, or ``hub`` to download THUDM's ``data.zip``), else
``$OLH_LONGBENCH_DIR``, else this repository's tiny fixtures with a loud warning (a smoke test, not
LongBench-E results). A bad row raises ``DataError`` naming file, line and field."""
from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from pathlib import Path

from olharness.longbench.protocol import base_name
from trainer.errors import DataError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO_ROOT / "tests" / "assets" / "longbench"
HUB_REPO = "THUDM/LongBench"
ENV_DIR = "OLH_LONGBENCH_DIR"

#: THUDM row schema: field -> accepted JSON types (None = null).
SCHEMA: dict[str, tuple] = {"input": (str,), "context": (str,), "answers": (list,), "length": (int,),
                            "dataset": (str,), "language": (str,), "all_classes": (list, type(None)), "_id": (str,)}

_TYPE_NAMES = {str: "a string", list: "a list", int: "an integer", type(None): "null"}


def _fail(path: Path, lineno: int | None, msg: str) -> DataError:
    return DataError(f"{path}:{lineno}: {msg}" if lineno is not None else f"{path}: {msg}")


def validate_row(row, path: Path, lineno: int, dataset: str) -> dict:
    """Check one parsed row against :data:`SCHEMA` (plus per-dataset needs) and return the row
    restricted to the schema fields. Raises ``DataError`` naming file, line and field."""
    if not isinstance(row, dict):
        raise _fail(path, lineno, f"expected a JSON object, got {type(row).__name__}")
    for field, types in SCHEMA.items():
        if field not in row:
            raise _fail(path, lineno, f"missing field '{field}'")
        value = row[field]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(_TYPE_NAMES[t] for t in types)
            raise _fail(path, lineno, f"field '{field}' must be {want}, got {type(value).__name__}")
    if row["length"] < 0:
        raise _fail(path, lineno, f"field 'length' must be >= 0, got {row['length']}")
    answers, classes = row["answers"], row["all_classes"]
    if classes is not None and not all(isinstance(c, str) for c in classes):
        raise _fail(path, lineno, "field 'all_classes' must be null or a list of strings")
    base = dataset.removesuffix("_e")
    # strings; THUDM's passage_count golds may also be integers (its count_score compares str(gold))
    if not answers or not all(isinstance(a, str) or (type(a) is int and base == "passage_count") for a in answers):
        raise _fail(path, lineno, "field 'answers' must be a non-empty list of strings")
    if base == "trec" and not classes:
        raise _fail(path, lineno, "field 'all_classes' must list the classes for trec")
    if base in ("passage_retrieval_en", "mini_passage_retrieval"):
        for a in answers:
            if not re.search(r"Paragraph (\d+)", a):
                raise _fail(path, lineno, f"field 'answers': {a!r} has no 'Paragraph <number>'")
    return {k: row[k] for k in SCHEMA}


def read_rows(path: str | Path, dataset: str) -> list[dict]:
    """Read and validate a THUDM-format jsonl file. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: LongBench file not found")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise _fail(path, lineno, f"not valid JSON ({err.msg} at column {err.colno})") from None
            rows.append(validate_row(row, path, lineno, dataset))
    if not rows:
        raise _fail(path, None, "file has no rows")
    return rows


def _hub_dir() -> Path:
    """Download THUDM's ``data.zip`` from the hub (cached) and extract it once; return its folder."""
    try:
        from huggingface_hub import hf_hub_download
        zip_path = Path(hf_hub_download(HUB_REPO, "data.zip", repo_type="dataset"))
    except Exception as err:  # network, auth, missing package
        raise DataError(f"could not download data.zip from the hub dataset {HUB_REPO} ({type(err).__name__}: {err}); "
                        "download and unzip it yourself and pass --metadata '{\"longbench_dir\": \"/path/to/data\"}'"
                        ) from None
    target = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "olharness" / "longbench"
    marker = target / ".complete"
    if not marker.exists():
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.namelist():
                dest = (target / member).resolve()
                if target.resolve() not in dest.parents and dest != target.resolve():
                    raise DataError(f"{zip_path}: unsafe path {member!r} in archive")
            zf.extractall(target)
        marker.write_text(str(zip_path))
    for cand in [target, *sorted(p for p in target.rglob("*") if p.is_dir())]:
        if (cand / "qasper_e.jsonl").is_file():
            return cand
    raise DataError(f"{zip_path}: no qasper_e.jsonl inside the extracted archive at {target}")


def resolve_data_dir(metadata: dict | None) -> tuple[Path, str]:
    """Return ``(folder, kind)`` with kind ``"dir"``, ``"hub"`` or ``"fixtures"``."""
    value = (metadata or {}).get("longbench_dir") or os.environ.get(ENV_DIR)
    if value:
        if str(value).strip().lower() == "hub":
            return _hub_dir(), "hub"
        path = Path(str(value)).expanduser()
        if not path.is_dir():
            raise DataError(f"longbench_dir {path} is not a directory (expected THUDM's unzipped data/ folder)")
        return path, "dir"
    if not FIXTURE_DIR.is_dir():
        raise DataError("no LongBench data: pass --metadata '{\"longbench_dir\": \"/path/to/data\"}' (THUDM data.zip "
                        f"unzipped), or 'hub', or set {ENV_DIR}")
    return FIXTURE_DIR, "fixtures"


_warned_fixtures = False


def load_longbench_rows(dataset: str, metadata: dict | None = None) -> tuple[list[dict], str]:
    """Validated rows of ``<dataset>_e.jsonl`` and a description of where they came from."""
    global _warned_fixtures
    base = base_name(dataset)
    folder, kind = resolve_data_dir(metadata)
    path = folder / f"{base}_e.jsonl"
    if not path.is_file():
        others = sorted(p.name for p in folder.glob("*_e.jsonl"))
        raise DataError(f"{path}: LongBench-E file for '{base}' not found"
                        + (f" (found: {', '.join(others)})" if others else " (folder has no *_e.jsonl files)"))
    rows = read_rows(path, f"{base}_e")
    if kind == "fixtures":
        log.warning(f"olh_longbench_e_{base}: NO LongBench data given; using the {len(rows)}-row offline "
                    f"FIXTURE {path}. These scores are a smoke test, NOT LongBench-E results. Pass "
                    "--metadata '{\"longbench_dir\": \"/path/to/LongBench/data\"}' (or 'hub').")
        if not _warned_fixtures:
            _warned_fixtures = True
            log.warning("=" * 100)
            log.warning("LONGBENCH-E IS RUNNING ON TEST FIXTURES, NOT ON THE REAL DATA")
            log.warning("=" * 100)
    return rows, f"{kind}:{path}"
