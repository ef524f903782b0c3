"""The LongBench-E protocol of THUDM/LongBench (v1): datasets, prompts, budgets, buckets, scoring.

Prompts and budgets are THUDM's files (``data/``, MIT licence in ``data/LICENSE-THUDM-LongBench``).
:func:`scorer_e` reproduces ``eval.py --e``, so predictions made elsewhere can be re-scored:
``python -m olharness.longbench.protocol PRED_DIR``."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from olharness.longbench.metrics import DATASET2METRIC, FIRST_LINE_DATASETS, score_row

DATA_DIR = Path(__file__).resolve().parent / "data"

#: The 13 LongBench-E datasets (base names; files and hub configs are ``<name>_e``), by category.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "single_doc_qa": ("qasper", "multifieldqa_en"),
    "multi_doc_qa": ("hotpotqa", "2wikimqa"),
    "summarization": ("gov_report", "multi_news"),
    "few_shot": ("trec", "triviaqa", "samsum"),
    "synthetic": ("passage_count", "passage_retrieval_en"),
    "code": ("lcc", "repobench-p"),
}
DATASETS: tuple[str, ...] = tuple(d for ds in CATEGORIES.values() for d in ds)

#: Length buckets of LongBench-E, by the row's ``length`` field (a word count).
BUCKETS: tuple[str, ...] = ("0-4k", "4-8k", "8k+")

#: Stop strings per dataset. THUDM generates ``max_gen`` tokens with only EOS as a stop, except for
#: samsum, where the newline token is an extra EOS (``eos_token_id=[eos, id("\n")]``).
STOP_STRINGS: dict[str, list[str]] = {d: [] for d in DATASETS} | {"samsum": ["\n"]}


@cache
def thudm_json(name: str) -> dict:
    """A THUDM data file, keyed by base name: ``dataset2prompt.json`` (prompt templates) or ``dataset2maxlen.json``
    (max new tokens)."""
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


def base_name(name: str) -> str:
    """``qasper_e`` -> ``qasper``; a base name is returned unchanged. Unknown names raise."""
    base = name[:-2] if name.endswith("_e") else name
    if base not in DATASETS:
        raise ValueError(f"unknown LongBench-E dataset {name!r}; known: {', '.join(DATASETS)}")
    return base


def render_prompt(dataset: str, row: dict) -> str:
    """The prompt THUDM's ``pred.py`` builds: ``template.format(**row)`` (str.format, so braces in
    the context are kept as they are)."""
    return thudm_json("dataset2prompt.json")[base_name(dataset)].format(**row)


def generation_kwargs(dataset: str) -> dict:
    """Greedy decoding with THUDM's per-dataset budget and stop strings, as lm-eval gen kwargs."""
    base = base_name(dataset)
    return {"until": list(STOP_STRINGS[base]), "max_gen_toks": int(thudm_json("dataset2maxlen.json")[base]),
            "do_sample": False, "temperature": 0.0}


def length_bucket(length: int) -> str:
    """``length < 4000`` -> ``0-4k``; ``< 8000`` -> ``4-8k``; else ``8k+``."""
    return "0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"


def score_prediction(dataset: str, prediction: str, answers: Sequence[str], all_classes=None) -> float:
    """One row's score in [0, 1], THUDM-style (first-line cut where due, max over answers)."""
    base = base_name(dataset)
    return score_row(DATASET2METRIC[base], prediction, answers, all_classes=all_classes,
                     first_line_only=base in FIRST_LINE_DATASETS)


def bucket_mean(scores: Sequence[float]) -> float:
    """``100 * np.mean(scores)``; NaN for an empty bucket (as ``np.mean([])`` gives THUDM)."""
    return float(100 * np.mean(np.asarray(scores, dtype=float))) if len(scores) else math.nan


def scorer_e(dataset: str, predictions: Sequence[str], answers: Sequence[Sequence[str]], lengths: Sequence[int],
             all_classes=None) -> dict[str, float]:
    """THUDM ``eval.py`` ``scorer_e``: ``{"0-4k": x, "4-8k": y, "8k+": z}``, each ``round(100 * mean, 2)`` (NaN for an
    empty bucket). ``all_classes`` is one list for the whole dataset, as in THUDM."""
    per_bucket: dict[str, list[float]] = {b: [] for b in BUCKETS}
    for pred, golds, length in zip(predictions, answers, lengths, strict=True):
        per_bucket[length_bucket(length)].append(score_prediction(dataset, pred, golds, all_classes))
    return {b: round(bucket_mean(s), 2) for b, s in per_bucket.items()}


def score_prediction_dir(pred_dir: str | Path) -> dict[str, dict[str, float]]:
    """Score every ``<dataset>.jsonl`` (rows with ``pred``, ``answers``, ``length``, ``all_classes``)
    in ``pred_dir`` like THUDM ``eval.py --e``."""
    out = {}
    for path in sorted(Path(pred_dir).glob("*.jsonl")):
        name = path.stem
        if name.removesuffix("_e") not in DATASETS:
            continue
        preds, answers, lengths, all_classes = [], [], [], None
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                row = json.loads(line)
                preds.append(row["pred"])
                answers.append(row["answers"])
                lengths.append(row["length"])
                all_classes = row.get("all_classes")
        out[name] = scorer_e(name, preds, answers, lengths, all_classes)
    return out


if __name__ == "__main__":  # pragma: no cover
    import sys
    if len(sys.argv) != 2:
        sys.exit("usage: python -m olharness.longbench.protocol PRED_DIR")
    print(json.dumps(score_prediction_dir(sys.argv[1]), indent=2))
