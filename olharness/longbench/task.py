"""lm-eval task classes for LongBench-E (THUDM protocol) and the olh mini long-context suite.

``ConfigurableTask`` subclasses used from YAML through ``class: !function ...``; the YAML names the
dataset (``dataset_name: qasper_e`` / ``mini_passkey``), the rest (prompt, greedy budget, stop
strings, metrics) comes from ``protocol`` / ``mini_lc`` unless the YAML sets it. Metrics (x100, like
THUDM): ``score`` over all rows and ``score_<bucket>`` per length bucket (LongBench-E ``0-4k``,
``4-8k``, ``8k+`` by the row's word count; mini suite ``1x`` .. ``8x`` of ``l_train``); an empty
bucket is NaN (THUDM's ``np.mean([])``) and so is its group value, never averaged silently.
``process_results`` returns ``(bucket, score)`` pairs; each bucket's aggregation keeps its own.

The mini suite's likelihood-scored multiple-choice twin (``MiniLCMCTask``, ``tasks/mini_lc/*_mc*``)
reports fractions: ``acc`` (highest summed loglikelihood, ties to the first choice), ``acc_calib``
(the choice whose loglikelihood the context raises most over the same prompt with an empty
context: cancels the model's prior over the answer strings), each also per bucket, and ``chance``
(mean of ``1 / number of choices``). Metrics by task: tasks/longbench_e/README.md, tasks/mini_lc/README.md.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable

import datasets
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from olharness.longbench import mini_lc, protocol
from olharness.longbench.loading import DataError, load_longbench_rows
from olharness.longbench.metrics import score_row

log = logging.getLogger(__name__)


def _agg_all(items) -> float:
    """``100 * mean`` over all rows."""
    return protocol.bucket_mean([float(x) for x in items])


def _make_bucket_agg(bucket: str) -> Callable:
    def agg(items) -> float:
        return protocol.bucket_mean([s for b, s in items if b == bucket])

    agg.__name__ = agg.__qualname__ = f"agg_bucket_{bucket}"
    agg.__doc__ = f"``100 * mean`` over the rows of bucket {bucket!r}; NaN if there are none."
    return agg


AGGREGATIONS: dict[str, Callable] = {"score": _agg_all}
for _b in (*protocol.BUCKETS, *mini_lc.BUCKETS):
    AGGREGATIONS[f"score_{_b}"] = _make_bucket_agg(_b)


def _metric_list(buckets) -> list[dict]:
    names = ["score", *(f"score_{b}" for b in buckets)]
    return [{"metric": n, "aggregation": AGGREGATIONS[n], "higher_is_better": True} for n in names]


class _LongStyleTask(ConfigurableTask):
    """Shared machinery: rows loaded in ``download``, prompt by template, bucketed scores. Subclasses
    define ``_resolve_name``, ``_generation_kwargs``, ``_load_rows``, ``_render``, ``_bucket``, ``_score``."""

    BUCKETS: tuple[str, ...] = ()

    def __init__(self, data_dir=None, cache_dir=None, download_mode=None, config: dict | None = None):
        cfg = dict(config or {})
        cfg.pop("class", None)
        name = cfg.get("dataset_name")
        if not name:
            raise ValueError(f"{type(self).__name__}: the task YAML must set dataset_name")
        self.dataset_key = self._resolve_name(name)
        cfg.setdefault("output_type", "generate_until")
        cfg.setdefault("test_split", "test")
        cfg.setdefault("num_fewshot", 0)  # zero-shot (LongBench's shots live inside the context)
        cfg.setdefault("doc_to_target", "answers")
        cfg.setdefault("generation_kwargs", self._generation_kwargs())
        cfg.setdefault("metric_list", _metric_list(self.BUCKETS))
        cfg["process_results"] = self._process_results
        self.data_source = None
        super().__init__(config=cfg)

    # lm-eval API -------------------------------------------------------------------------------
    def download(self, dataset_kwargs=None, **kwargs) -> None:
        rows = self._load_rows(dict(self.config.metadata or {}))
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
        if isinstance(self.config.metadata, dict):
            self.config.metadata["data_source"] = self.data_source

    def doc_to_text(self, doc, doc_to_text=None):
        return self._render(doc)

    def _process_results(self, doc: dict, results: list) -> dict:
        prediction = results[0]
        score = self._score(doc, prediction)
        bucket = self._bucket(doc)
        return {"score": score, **{f"score_{b}": (bucket, score) for b in self.BUCKETS}}


class LongBenchETask(_LongStyleTask):
    """One LongBench-E dataset, THUDM protocol (``olharness.longbench.protocol``).

    Data: metadata ``longbench_dir`` (THUDM ``data/`` folder or ``hub``), else ``OLH_LONGBENCH_DIR``,
    else the offline fixtures (with a warning). See ``olharness.longbench.loading``.
    """

    BUCKETS = protocol.BUCKETS

    def _resolve_name(self, name: str) -> str:
        return protocol.base_name(name)

    def _generation_kwargs(self) -> dict:
        return protocol.generation_kwargs(self.dataset_key)

    def _load_rows(self, metadata: dict) -> list[dict]:
        rows, self.data_source = load_longbench_rows(self.dataset_key, metadata)
        return rows

    def _render(self, doc: dict) -> str:
        return protocol.render_prompt(self.dataset_key, doc)

    def _bucket(self, doc: dict) -> str:
        return protocol.length_bucket(doc["length"])

    def _score(self, doc: dict, prediction: str) -> float:
        return protocol.score_prediction(self.dataset_key, prediction, doc["answers"], doc["all_classes"])


class MiniLCTask(_LongStyleTask):
    """One dataset of the olh mini long-context suite (ours, not LongBench; see ``mini_lc``).

    Metadata: ``l_train`` (or ``run_dir`` / ``pretrained`` of one of our runs), ``texts``,
    ``mini_lc_tokenizer`` (or ``tokenizer`` / ``run_dir`` / ``pretrained``), ``mini_lc_seed``,
    ``mini_lc_n``, ``mini_lc_para_tokens``; see ``mini_lc.load_mini_rows``.
    """

    BUCKETS = mini_lc.BUCKETS

    def _resolve_name(self, name: str) -> str:
        if name not in mini_lc.MINI_DATASETS:
            raise ValueError(f"unknown mini_lc dataset {name!r}; known: {', '.join(mini_lc.MINI_DATASETS)}")
        return name

    def _generation_kwargs(self) -> dict:
        return mini_lc.generation_kwargs(self.dataset_key)

    def _load_rows(self, metadata: dict) -> list[dict]:
        rows, self.data_source, self.l_train = mini_lc.load_mini_rows(self.dataset_key, metadata)
        return rows

    def _render(self, doc: dict) -> str:
        return mini_lc.render_prompt(self.dataset_key, doc)

    def _bucket(self, doc: dict) -> str:
        return mini_lc.length_bucket(doc["length"], self.l_train)

    def _score(self, doc: dict, prediction: str) -> float:
        return score_row(mini_lc.METRICS[self.dataset_key], prediction, doc["answers"], doc["all_classes"])


# ------------------------------------------------------------------ multiple-choice twin (olh_mini_lc_mc)
MC_K = 4  # choices per row (fewer when a row has fewer candidates)
_PARA_LABEL = re.compile(r"(?:^|\n\n)Paragraph (\d+): ")


def mc_choices(row: dict, seed: int, k: int = MC_K) -> tuple[list[str], int]:
    """``(choices, gold)`` of one row for likelihood scoring: continuations of the prompt, each
    starting with a space (`` 3``, `` 48213``), in a seeded random order; ``choices[gold]`` is the
    answer, which occurs exactly once. Deterministic in ``(seed, row["_id"], row)``.

    - ``mini_passage_retrieval``: the gold paragraph number and ``k - 1`` others drawn uniformly
      from the row's paragraphs (all of them when there are fewer than ``k``; chance ``1/#choices``).
    - ``mini_passage_count``: the ``k`` consecutive integers ``lo .. lo + k - 1`` holding the gold
      count at a uniform position, moved up so that ``lo >= 1``.
    - ``mini_passkey``: the key, a near miss (the key with one digit changed; position and new digit
      uniform, no leading zero) and ``k - 2`` uniform random five-digit keys; no distractor occurs in
      the prompt.
    """
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
    choices = [f" {values[i]}" for i in order]
    return choices, order.index(0)


def _mean(items) -> float:
    """Plain mean over all rows (no standard error)."""
    items = [float(x) for x in items]
    return sum(items) / len(items) if items else float("nan")


def _make_mc_bucket_agg(bucket: str) -> Callable:
    def agg(items) -> float:
        vals = [float(s) for b, s in items if b == bucket]
        return sum(vals) / len(vals) if vals else float("nan")

    agg.__name__ = agg.__qualname__ = f"agg_acc_bucket_{bucket}"
    agg.__doc__ = f"Accuracy over the rows of bucket {bucket!r}; NaN if there are none."
    return agg


MC_AGGREGATIONS: dict[str, Callable] = {f"acc_{b}": _make_mc_bucket_agg(b) for b in mini_lc.BUCKETS}


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
    """Likelihood-scored multiple-choice twin of one mini dataset (``olh_mini_lc_mc_*``).

    The same rows, prompts and metadata as :class:`MiniLCTask`; each row gets seeded choices
    (:func:`mc_choices`: continuations starting with a space, the gold one exactly once) stored
    in the columns ``choices`` and ``gold``. Requests (lm-eval's ``multiple_choice`` output type):
    one ``loglikelihood`` per choice after the prompt, then one per choice after the prompt with an
    empty context (short; for ``acc_calib``). The predicted choice is the one of highest summed
    loglikelihood (no length normalisation). Metrics: ``acc``, ``acc_1x`` .. ``acc_8x``,
    ``acc_calib``, ``acc_calib_1x`` .. ``acc_calib_8x``, ``chance``.
    """

    def __init__(self, data_dir=None, cache_dir=None, download_mode=None, config: dict | None = None):
        cfg = dict(config or {})
        cfg.setdefault("output_type", "multiple_choice")
        cfg.setdefault("doc_to_choice", "choices")
        cfg.setdefault("doc_to_target", "gold")
        cfg.setdefault("target_delimiter", "")  # the choices carry their leading space
        cfg.setdefault("metric_list", _mc_metric_list(self.BUCKETS))
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
        return reqs + [
            Instance(request_type=r.request_type, doc=r.doc, arguments=(base, *r.arguments[1:]), idx=n + i,
                     metadata=r.metadata)  # fmt: skip
            for i, r in enumerate(reqs)
        ]

    def _process_results(self, doc: dict, results: list) -> dict:
        n = len(doc["choices"])
        lls = [float(r[0]) for r in results]
        if len(lls) != 2 * n:
            raise ValueError(f"{self.config.task}: expected {2 * n} loglikelihoods for {doc['_id']}, got {len(lls)}")
        acc = float(_argmax(lls[:n]) == doc["gold"])
        calib = float(_argmax([a - b for a, b in zip(lls[:n], lls[n:])]) == doc["gold"])
        bucket = self._bucket(doc)
        return {
            "acc": acc,
            **{f"acc_{b}": (bucket, acc) for b in self.BUCKETS},
            "acc_calib": calib,
            **{f"acc_calib_{b}": (bucket, calib) for b in self.BUCKETS},
            "chance": 1 / n,
        }
