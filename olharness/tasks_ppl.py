"""``olh_ppl_len``: perplexity by context length, on held-out long documents (tasks/ppl_len/README.md).

Task ``olh_ppl_len_<k>x`` (YAML key ``length_multiple: k``) cuts each of ``n_docs`` seeded spans of 8 * l_train
reference tokens into chunks of C = k * l_train tokens, one task document per chunk, so the four tasks score the same
tokens with different context. Per chunk: one ``loglikelihood_rolling`` request (word/byte/token perplexity, bits per
byte; words counted once per span by ``count_words``) and one ``loglikelihood`` request per position bucket below C ([0,
1x), [1x, 2x), ... of l_train, context = the chunk before it; bounds in reference tokens, re-tokenized by the model):
``nll_<a>-<b>x`` and ``excess_<a>-<b>x`` (the bucket's NLL minus that of [0, 1x) of the same chunks). A model whose
max_length is below C scores in several rolling windows, i.e. at its own max_length (lm-eval's rule)."""
from __future__ import annotations

import logging
import re

import datasets
import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
from lm_eval.api.task import ConfigurableTask

from olharness import task_common as tc
from trainer.errors import DataError, OLHError

log = logging.getLogger(__name__)

MULTIPLES = (1, 2, 4, 8)
BUCKETS = [(0, 1), (1, 2), (2, 4), (4, 8)]  # in multiples of l_train
DEFAULT_N_DOCS = 4


def bucket_name(a: int, b: int) -> str:
    return f"nll_{a}-{b}x"


def count_words(text: str, before: str = "") -> int:
    """Whitespace-delimited words of ``text``, not counting a word that began in ``before`` (the
    previous chunk of the same span): summed over a span's chunks this is the span's word count,
    whatever the chunk length, so word perplexities of the four lengths are comparable."""
    n = len(re.findall(r"\S+", text))
    if n and before and not before[-1].isspace() and not text[0].isspace():
        n -= 1
    return n


def token_perplexity(items) -> float:
    return weighted_perplexity(items)


def excess_nll(items) -> float:
    """mean NLL of a far bucket minus that of [0, 1x) over (nll, n, nll_first, n_first) tuples."""
    return mean_nll([(a, n) for a, n, _, _ in items]) - mean_nll([(b, m) for _, _, b, m in items])


def mean_nll(items) -> float:
    """sum of NLL / number of tokens over (nll, n_tokens) pairs; NaN when there are none."""
    nll, n = sum(x for x, _ in items), sum(k for _, k in items)
    return nll / n if n else float("nan")


def pick_spans(docs: list[tuple[str, list[int]]], span: int, n: int, seed: int, task: str) -> list[tuple[str, list[int]]]:
    """n non-overlapping spans of `span` tokens, chosen with the seed, in document order."""
    slots = [(d, s) for d, (_, ids) in enumerate(docs) for s in range(0, len(ids) - span + 1, span)]
    if not slots:
        longest = max((len(ids) for _, ids in docs), default=0)
        raise DataError(f"{task}: no held-out document has the {span} tokens one span (8 x l_train) needs "
                        f"(longest: {longest}); give longer texts (metadata texts)")
    if n > len(slots):
        log.warning("%s: only %d spans of %d tokens available; using all of them", task, len(slots), span)
        n = len(slots)
    chosen = sorted(np.random.default_rng(seed).choice(len(slots), size=n, replace=False).tolist())
    return [(f"{docs[slots[i][0]][0]}@{slots[i][1]}", docs[slots[i][0]][1][slots[i][1]:slots[i][1] + span]) for i in chosen]


class PPLLenTask(tc.GeneratedTestTask, ConfigurableTask):
    """``class: !function olharness.tasks_ppl.PPLLenTask`` with ``length_multiple: k``."""

    def __init__(self, data_dir=None, cache_dir=None, download_mode=None, config: dict | None = None):
        cfg = dict(config or {})
        self.k = int(cfg.pop("length_multiple", 1))
        if self.k not in MULTIPLES:
            raise OLHError(f"olh_ppl_len: length_multiple must be one of {MULTIPLES}, got {self.k}")
        self.buckets = [(a, b) for a, b in BUCKETS if b <= self.k]
        metrics = [("word_perplexity", weighted_perplexity), ("byte_perplexity", weighted_perplexity),
                   ("bits_per_byte", bits_per_byte), ("token_perplexity", token_perplexity)]
        metrics += [(bucket_name(a, b), mean_nll) for a, b in self.buckets]
        metrics += [(f"excess_{a}-{b}x", excess_nll) for a, b in self.buckets[1:]]
        self._configure(cfg, [(n, f, False) for n, f in metrics], output_type="loglikelihood_rolling",
                        doc_to_target="text")

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        task = self.config.task or f"olh_ppl_len_{self.k}x"
        md = tc.check_metadata(self.config.metadata, task)
        self.l_train = tc.resolve_l_train(md, task)
        self.tok = tc.resolve_tokenizer(md, task)
        L, C = self.l_train, self.k * self.l_train
        spans = pick_spans(tc.tokenized_docs(md, task, self.tok), 8 * L, tc._int(md, "n_docs", DEFAULT_N_DOCS),
                           tc.seed_of(md), task)
        rows = []
        for name, ids in spans:
            prev = ""
            for off in range(0, len(ids), C):
                chunk = ids[off:off + C]
                text = self.tok.decode(chunk)
                bounds = [(a * L, b * L) for a, b in self.buckets]
                rows.append({"span": name, "offset": off, "text": text, "n_tokens": len(chunk),
                             "n_words": count_words(text, prev), "n_bytes": len(text.encode("utf-8")),
                             "bucket_ctx": [self.tok.decode(chunk[:a]) for a, _ in bounds],
                             "bucket_cont": [self.tok.decode(chunk[a:b]) for a, b in bounds],
                             "bucket_tokens": [b - a for a, b in bounds]})
                prev = text
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

    def construct_requests(self, doc, ctx, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        reqs = [Instance(request_type="loglikelihood_rolling", doc=doc, arguments=(doc["text"],), idx=0, **kwargs)]
        for i, (c, x) in enumerate(zip(doc["bucket_ctx"], doc["bucket_cont"])):
            reqs.append(Instance(request_type="loglikelihood", doc=doc, arguments=(c, x), idx=i + 1, **kwargs))
        return reqs

    def _process_results(self, doc, results):
        ll = float(results[0])
        words, nbytes = doc["n_words"], doc["n_bytes"]
        out = {"word_perplexity": (ll, words), "byte_perplexity": (ll, nbytes), "bits_per_byte": (ll, nbytes),
               "token_perplexity": (ll, doc["n_tokens"])}
        for (a, b), r, n in zip(self.buckets, results[1:], doc["bucket_tokens"]):
            out[bucket_name(a, b)] = (-float(r[0]), n)
        first = out[bucket_name(*BUCKETS[0])]
        for a, b in self.buckets[1:]:
            out[f"excess_{a}-{b}x"] = out[bucket_name(a, b)] + first
        return out
