"""lm-eval task classes for LongBench-E (THUDM protocol) and the olh mini long-context suite.

``ConfigurableTask`` subclasses used from YAML (``class: !function ...``); the YAML names the dataset,
the rest comes from ``protocol`` / ``mini_lc`` unless the YAML sets it. Scores are x100 like THUDM's,
overall and per length bucket; an empty bucket is NaN (THUDM's ``np.mean([])``), never averaged away.
Metrics by task: tasks/longbench_e/README.md, tasks/mini_lc/README.md."""
from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable

import datasets
import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from olharness.longbench import mini_lc, protocol
from olharness.longbench.loading import DataError, load_longbench_rows
from olharness.longbench.metrics import score_row

log = logging.getLogger(__name__)


def _agg_all(items) -> float:
    """``100 * mean`` over all rows."""
    return protocol.bucket_mean([float(x) for x in items])


def _bucket_agg(bucket: str, scale: float = 100.0) -> Callable:
    """``scale * mean`` over the rows of one bucket (``process_results`` gives (bucket, score) pairs); NaN
    if there are none."""
    def agg(items) -> float:
        vals = [float(s) for b, s in items if b == bucket]
        return float(scale * np.mean(vals)) if vals else float("nan")

    agg.__name__ = agg.__qualname__ = f"agg_{'score' if scale == 100 else 'acc'}_bucket_{bucket}"
    return agg


AGGREGATIONS: dict[str, Callable] = {"score": _agg_all}
AGGREGATIONS |= {f"score_{b}": _bucket_agg(b) for b in (*protocol.BUCKETS, *mini_lc.BUCKETS)}


def _metric_list(buckets) -> list[dict]:
    names = ["score", *(f"score_{b}" for b in buckets)]
    return [{"metric": n, "aggregation": AGGREGATIONS[n], "higher_is_better": True} for n in names]


class _LongStyleTask(ConfigurableTask):
    """Shared machinery: rows loaded in ``download``, prompts and generation settings from the ``PROTOCOL`` module
    (``protocol`` or ``mini_lc``), bucketed scores. Subclasses define ``_resolve_name``, ``_load_rows``, ``_bucket``,
    ``_score``."""

    BUCKETS: tuple[str, ...] = ()
    PROTOCOL = protocol

    def __init__(self, data_dir=None, cache_dir=None, download_mode=None, config: dict | None = None):
        cfg = dict(config or {})
        cfg.pop("class", None)
        name = cfg.get("dataset_name")
        if not name:
            raise ValueError(f"{type(self).__name__}: the task YAML must set dataset_name")
        self.dataset_key = self._resolve_name(name)
        # our defaults under the YAML's keys; zero-shot: LongBench's shots live inside the context
        cfg = {"output_type": "generate_until", "test_split": "test", "num_fewshot": 0, "doc_to_target": "answers",
               "generation_kwargs": self._generation_kwargs(), "metric_list": _metric_list(self.BUCKETS), **cfg,
               "process_results": self._process_results}
        self.data_source = None
        super().__init__(config=cfg)

    # lm-eval API -------------------------------------------------------------------------------
    def download(self, dataset_kwargs=None, **kwargs) -> None:
        rows = self._load_rows(dict(self.config.metadata or {}))
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
        if isinstance(self.config.metadata, dict):
            self.config.metadata["data_source"] = self.data_source

    def doc_to_text(self, doc, doc_to_text=None):
        return self.PROTOCOL.render_prompt(self.dataset_key, doc)

    def _generation_kwargs(self) -> dict | None:
        return self.PROTOCOL.generation_kwargs(self.dataset_key)

    def _process_results(self, doc: dict, results: list) -> dict:
        score, bucket = self._score(doc, results[0]), self._bucket(doc)
        return {"score": score, **{f"score_{b}": (bucket, score) for b in self.BUCKETS}}


class LongBenchETask(_LongStyleTask):
    """One LongBench-E dataset, THUDM protocol; data as ``olharness.longbench.loading`` finds it."""

    BUCKETS = protocol.BUCKETS

    def _resolve_name(self, name: str) -> str:
        return protocol.base_name(name)

    def _load_rows(self, metadata: dict) -> list[dict]:
        rows, self.data_source = load_longbench_rows(self.dataset_key, metadata)
        return rows

    def _bucket(self, doc: dict) -> str:
        return protocol.length_bucket(doc["length"])

    def _score(self, doc: dict, prediction: str) -> float:
        return protocol.score_prediction(self.dataset_key, prediction, doc["answers"], doc["all_classes"])


class MiniLCTask(_LongStyleTask):
    """One dataset of the olh mini long-context suite; metadata as ``mini_lc.load_mini_rows`` reads it."""

    BUCKETS, PROTOCOL = mini_lc.BUCKETS, mini_lc

    def _resolve_name(self, name: str) -> str:
        if name not in mini_lc.MINI_DATASETS:
            raise ValueError(f"unknown mini_lc dataset {name!r}; known: {', '.join(mini_lc.MINI_DATASETS)}")
        return name

    def _load_rows(self, metadata: dict) -> list[dict]:
        rows, self.data_source, self.l_train = mini_lc.load_mini_rows(self.dataset_key, metadata)
        return rows

    def _bucket(self, doc: dict) -> str:
        return mini_lc.length_bucket(doc["length"], self.l_train)

    def _score(self, doc: dict, prediction: str) -> float:
        return score_row(mini_lc.METRICS[self.dataset_key], prediction, doc["answers"], doc["all_classes"])


# ------------------------------------------------------------------ multiple-choice twin (olh_mini_lc_mc)
MC_K = 4  # choices per row (fewer when a row has fewer candidates)
_PARA_LABEL = re.compile(r"(?:^|\n\n)Paragraph (\d+): ")


def mc_choices(row: dict, seed: int, k: int = MC_K) -> tuple[list[str], int]:
    """``(choices, gold)`` of one row: continuations starting with a space (`` 3``), in a seeded order,
    the answer exactly once. Retrieval: the gold paragraph and k - 1 others of the row; count: k
    consecutive integers >= 1 holding the gold count; passkey: the key, a one-digit near miss and
    random five-digit keys absent from the prompt (tasks/mini_lc/README.md)."""
    d = row["dataset"]
    rng = random.Random(f"{seed}:mc:{row['_id']}")
    if d == "mini_passage_retrieval":
        gold = int(row["answers"][0].split()[-1])
        labels = [int(x) for x in _PARA_LABEL.findall(row["context"])]
        others = [i for i in labels if i != gold]
        if gold not in labels or len(others) != len(labels) - 1:
            raise DataError(f"mini_lc: row {row['_id']} has no single paragraph {gold}")
        values = [gold, *rng.sample(others, min(k - 1, len(others)))]
    elif d == "mini_passage_count":
        gold = int(row["answers"][0])
        lo = max(1, gold - rng.randrange(k))
        values = [gold, *(v for v in range(lo, lo + k) if v != gold)]
    elif d == "mini_passkey":
        gold = int(row["answers"][0])
        prompt = mini_lc.render_prompt(d, row)
        key = str(gold)
        values = [gold]
        while len(values) < 2:  # the near miss
            pos = rng.randrange(len(key))
            digit = rng.choice([c for c in "0123456789" if c != key[pos] and (pos or c != "0")])
            near = int(key[:pos] + digit + key[pos + 1 :])
            if str(near) not in prompt:
                values.append(near)
        while len(values) < k:
            v = rng.randint(10000, 99999)
            if v not in values and str(v) not in prompt:
                values.append(v)
    else:
        raise DataError(f"mini_lc: unknown dataset {d!r}; known: {', '.join(mini_lc.MINI_DATASETS)}")
    order = list(range(len(values)))
    rng.shuffle(order)
    return [f" {values[i]}" for i in order], order.index(0)


def _mean(items) -> float:
    """Plain mean over all rows (no standard error)."""
    items = [float(x) for x in items]
    return sum(items) / len(items) if items else float("nan")


MC_AGGREGATIONS: dict[str, Callable] = {f"acc_{b}": _bucket_agg(b, 1.0) for b in mini_lc.BUCKETS}


def _mc_metric_list(buckets) -> list[dict]:
    out = []
    for acc in ("acc", "acc_calib"):
        out.append({"metric": acc, "aggregation": "mean", "higher_is_better": True})
        out += [{"metric": f"{acc}_{b}", "aggregation": MC_AGGREGATIONS[f"acc_{b}"], "higher_is_better": True}
                for b in buckets]
    return [*out, {"metric": "chance", "aggregation": _mean, "higher_is_better": True}]


def _argmax(values: list[float]) -> int:
    """Index of the largest value; ties go to the first."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


class MiniLCMCTask(MiniLCTask):
    """Likelihood-scored multiple-choice twin of one mini dataset (``olh_mini_lc_mc_*``): the same rows,
    one loglikelihood per choice after the prompt, then one after the prompt with an empty context, for
    ``acc_calib`` (the choice the context raises most: cancels the model's prior over answers)."""

    def __init__(self, data_dir=None, cache_dir=None, download_mode=None, config: dict | None = None):
        cfg = {"output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "gold",
               "target_delimiter": "",  # the choices carry their leading space
               "metric_list": _mc_metric_list(self.BUCKETS), **(config or {})}
        super().__init__(data_dir, cache_dir, download_mode, config=cfg)

    def _generation_kwargs(self) -> dict | None:
        return None

    def _load_rows(self, metadata: dict) -> list[dict]:
        rows = super()._load_rows(metadata)
        seed = mini_lc.mini_seed(metadata)
        for r in rows:
            r["choices"], r["gold"] = mc_choices(r, seed)
        return rows

    def construct_requests(self, doc, ctx, **kwargs):
        reqs = super().construct_requests(doc, ctx, **kwargs)
        base = mini_lc.render_prompt_without_context(self.dataset_key, doc)
        n = len(reqs)
        return reqs + [Instance(request_type=r.request_type, doc=r.doc, arguments=(base, *r.arguments[1:]), idx=n + i,
                                metadata=r.metadata) for i, r in enumerate(reqs)]

    def _process_results(self, doc: dict, results: list) -> dict:
        n = len(doc["choices"])
        lls = [float(r[0]) for r in results]
        if len(lls) != 2 * n:
            raise ValueError(f"{self.config.task}: expected {2 * n} loglikelihoods for {doc['_id']}, got {len(lls)}")
        acc = float(_argmax(lls[:n]) == doc["gold"])
        calib = float(_argmax([a - b for a, b in zip(lls[:n], lls[n:])]) == doc["gold"])
        bucket = self._bucket(doc)
        return {"acc": acc, **{f"acc_{b}": (bucket, acc) for b in self.BUCKETS}, "acc_calib": calib,
                **{f"acc_calib_{b}": (bucket, calib) for b in self.BUCKETS}, "chance": 1 / n}
