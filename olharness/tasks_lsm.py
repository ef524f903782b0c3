"""lm-eval tasks for Long-Short Misalignment: ``olh_lsm`` (exact, custom ``lsm`` request) and ``olh_lsm_ll``
(approximate, loglikelihood requests only); tasks/lsm/README.md describes both.

One document = one sample of the metric's expectation: a held-out text ending at a random token and two seeded suffix
lengths in ``suffix_range`` x l_train, cut with the reference tokenizer (``olharness.task_common``). The text holds ``2
* hi * l_train + 16`` tokens, so a model with another tokenizer still finds ``l_long`` of its own tokens. The divergence
scored is recorded in the task's metadata, so a report labels the column by what was scored."""
from __future__ import annotations

import math
from collections import Counter

import datasets
import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from olharness import task_common as tc
from olharness.lsm import DEFAULT_DIVERGENCE, approx_divergences, check_divergence
from trainer.errors import DataError, OLHError

MARGIN = 16
EXACT_METRICS = ("lsm", "lsm_symkl")
APPROX_METRICS = ("lsm_ll_approx", "lsm_ll_approx_symkl")
DEFAULT_N_DOCS = 32


def build_rows(docs: list[tuple[str, list[int]]], tok, l_train: int, suffix_range, n_docs: int, seed: int,
               n_candidates: int = 0, task: str = "olh_lsm") -> list[dict]:
    """The task documents (see the module docstring)."""
    lo_f, hi_f = (float(x) for x in suffix_range)
    lo, hi = max(1, math.ceil(lo_f * l_train)), max(1, math.floor(hi_f * l_train))
    if lo > hi:
        raise OLHError(f"{task}: empty suffix range [{lo_f}, {hi_f}] x l_train={l_train}")
    span = 2 * hi + MARGIN
    eligible = [(n, ids) for n, ids in docs if len(ids) >= hi + 1]
    if not eligible:
        longest = max((len(ids) for _, ids in docs), default=0)
        raise DataError(f"{task}: no held-out document has the {hi + 1} tokens a suffix of up to {hi} needs "
                        f"(longest: {longest}); give longer texts (metadata texts) or a smaller range")
    rng = np.random.default_rng(seed)
    cands: list[str] = []
    if n_candidates:
        for t, _ in Counter(t for _, ids in eligible for t in ids).most_common():
            s = tok.decode([t])
            if s and s not in cands:
                cands.append(s)
            if len(cands) == n_candidates:
                break
    rows = []
    for i in range(n_docs):
        name, ids = eligible[i % len(eligible)]
        end = int(rng.integers(min(len(ids), hi + MARGIN), len(ids) + 1))
        l_short, l_long = sorted(int(x) for x in rng.integers(lo, hi + 1, size=2))
        row = {"doc": name, "end": end, "l_short": l_short, "l_long": l_long,
               "text": tok.decode(ids[max(0, end - span):end])}
        if n_candidates:
            nxt = tok.decode(ids[end:end + 1]) if end < len(ids) else ""
            row.update(candidates=cands + ([nxt] if nxt and nxt not in cands else []),
                       ctx_short=tok.decode(ids[end - l_short:end]), ctx_long=tok.decode(ids[end - l_long:end]))
        rows.append(row)
    return rows


class LSMTask(tc.GeneratedTestTask, ConfigurableTask):
    """``class: !function olharness.tasks_lsm.LSMTask``. YAML keys of its own: ``suffix_range`` ([lo, hi] in multiples
    of l_train), ``approximate`` (bool: the olh_lsm_ll form), ``n_candidates`` (approximate form only)."""

    def __init__(self, data_dir=None, cache_dir=None, download_mode=None, config: dict | None = None):
        cfg = dict(config or {})
        self.suffix_range = tuple(cfg.pop("suffix_range", (0.5, 1.0)))
        self.approximate = bool(cfg.pop("approximate", False))
        self.n_candidates = int(cfg.pop("n_candidates", 32)) if self.approximate else 0
        names = APPROX_METRICS if self.approximate else EXACT_METRICS
        self._configure(cfg, [(n, "mean", False) for n in names], output_type="loglikelihood", doc_to_target="text")

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        task = self.config.task or "olh_lsm"
        md = tc.check_metadata(self.config.metadata, task)
        self.divergence = str(md.get("divergence") or DEFAULT_DIVERGENCE)
        self.kl_direction = str(md.get("kl_direction") or "long_short")
        check_divergence(self.divergence, self.kl_direction)
        if isinstance(self.config.metadata, dict):  # lm-eval writes it into results["configs"][task]
            self.config.metadata.update(divergence=self.divergence, kl_direction=self.kl_direction)
        self.l_train = tc.resolve_l_train(md, task)
        tok = tc.resolve_tokenizer(md, task)
        rows = build_rows(tc.tokenized_docs(md, task, tok), tok, self.l_train, self.suffix_range,
                          tc._int(md, "n_docs", DEFAULT_N_DOCS), tc.seed_of(md), self.n_candidates, task)
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

    def construct_requests(self, doc, ctx, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        if not self.approximate:
            opts = {"divergence": self.divergence, "kl_direction": self.kl_direction}
            return Instance(request_type="lsm", doc=doc, arguments=(doc["text"], doc["l_short"], doc["l_long"], opts),
                            idx=0, **kwargs)
        args = [(doc[view], c) for view in ("ctx_short", "ctx_long") for c in doc["candidates"]]
        return [Instance(request_type="loglikelihood", doc=doc, arguments=a, idx=i, **kwargs) for i, a in enumerate(args)]

    def _process_results(self, doc, results):
        if not self.approximate:
            (r,) = results
            return {"lsm": float(r["lsm"]), "lsm_symkl": float(r["lsm_symkl"])}
        k = len(doc["candidates"])
        lls = [float(r[0]) for r in results]
        d = approx_divergences(lls[k:], lls[:k], self.divergence, self.kl_direction)
        return {"lsm_ll_approx": d["lsm"], "lsm_ll_approx_symkl": d["lsm_symkl"]}
