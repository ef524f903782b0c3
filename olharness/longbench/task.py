"""lm-eval task classes for LongBench-E (THUDM protocol) and the olh mini long-context suite.

Both are ``ConfigurableTask`` subclasses used from YAML through ``class: !function ...``. The YAML
names the dataset (``dataset_name: qasper_e`` / ``mini_passkey``); everything else (prompt,
greedy generation budget and stop strings, metrics) comes from the protocol modules unless the
YAML sets it.

Metrics reported per task (``higher_is_better``; all x100, like THUDM):

``score``
    mean row score over all rows;
``score_<bucket>``
    mean over the rows of one length bucket: LongBench-E ``0-4k``, ``4-8k``, ``8k+`` (by the row's
    ``length``, a word count); mini suite ``1x``, ``2x``, ``4x``, ``8x`` (multiples of ``l_train``).
    An empty bucket is reported as ``NaN`` (THUDM's ``np.mean([])``), and makes the group's value
    for that bucket ``NaN`` too, so an incomplete bucket is never averaged silently.

``process_results`` returns ``(bucket, score)`` pairs for the bucket metrics; their aggregation
functions keep only the pairs of their own bucket. No standard errors are computed (``N/A``).

The mini suite's likelihood-scored multiple-choice twin (``MiniLCMCTask``, ``tasks/mini_lc/*_mc*``)
reports instead (fractions, not x100):

``acc``
    accuracy: the choice of highest summed loglikelihood is the gold one (ties go to the first
    choice), mean over all rows (with lm-eval's standard error);
``acc_<bucket>``
    the same over the rows of one bucket (``1x`` .. ``8x``), NaN for an empty bucket;
``acc_calib``, ``acc_calib_<bucket>``
    calibrated accuracy: the gold choice is the one whose loglikelihood the context raises most,
    ``argmax_c [log p(c | prompt) - log p(c | prompt with an empty context)]``; cancels the model's
    prior over the answer strings (small models' plain ``acc`` mostly measures that prior);
``chance``
    the accuracy a uniform random guess expects: mean of ``1 / number of choices``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import datasets

from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask
from olharness.longbench import mini_lc, protocol
from olharness.longbench.loading import load_longbench_rows
from olharness.longbench.metrics import score_row

log = logging.getLogger(__name__)


def register_models() -> None:
    """Register the ``hf-mid`` model name lazily (torch/transformers are imported only when it is
    used). Runs on import of this module, which the task YAMLs import through ``!function``, so
    ``lm_eval --model hf-mid --tasks tasks/longbench_e/...yaml`` finds it."""
    import lm_eval.models  # noqa: F401  # built-in models first, or they vanish from the registry
    from lm_eval.api.registry import model_registry

    if "hf-mid" not in model_registry:
        model_registry.register("hf-mid", target="olharness.longbench.hf_mid:HFMidLM")


register_models()


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
    """Shared machinery: rows loaded in ``download``, prompt by template, bucketed scores."""

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

    # hooks -------------------------------------------------------------------------------------
    def _resolve_name(self, name: str) -> str:
        raise NotImplementedError

    def _generation_kwargs(self) -> dict:
        raise NotImplementedError

    def _load_rows(self, metadata: dict) -> list[dict]:
        raise NotImplementedError

    def _bucket(self, doc: dict) -> str:
        raise NotImplementedError

    def _score(self, doc: dict, prediction: str) -> float:
        raise NotImplementedError

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
    (``mini_lc.mc_choices``: continuations starting with a space, the gold one exactly once) stored
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
            r["choices"], r["gold"] = mini_lc.mc_choices(r, seed)
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
