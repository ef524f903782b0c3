"""``olh_copy``: retrieval by copying, scored by likelihood so any lm-eval model can be scored (tasks/copy/README.md).

A document: a held-out passage P of m = l_train/4 tokens after its c = l_train/4 tokens of context, then filler from
another place, then P again, ending at k * l_train tokens for k in 1, 2, 4, 8. The control puts another passage (and its
context) in place of the first copy, so only "P was seen before" differs. Metrics, nats per token of P:
``copy_gain_<k>x`` = NLL of the second copy in the control minus after the first copy (about 0: the model cannot look
back that far); ``copy_drop_<k>x`` = NLL of the first copy minus that of the second (also pays for starting mid-text
after filler); ``copy_nll_first``."""
from __future__ import annotations

import datasets
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from olharness import task_common as tc
from olharness.tasks_ppl import mean_nll, pick_spans
from trainer.errors import DataError

MULTIPLES = (1, 2, 4, 8)
DEFAULT_N_DOCS = 16


class CopyTask(tc.GeneratedTestTask, ConfigurableTask):
    """``class: !function olharness.tasks_copy.CopyTask``."""

    def __init__(self, data_dir=None, cache_dir=None, download_mode=None, config: dict | None = None):
        names = ["copy_nll_first"] + [f"copy_{w}_{k}x" for w in ("gain", "drop") for k in MULTIPLES]
        self._configure(dict(config or {}), [(n, mean_nll, n != "copy_nll_first") for n in names],
                        output_type="loglikelihood", doc_to_target="passage")

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        task = self.config.task or "olh_copy"
        md = tc.check_metadata(self.config.metadata, task)
        L = tc.resolve_l_train(md, task)
        tok = tc.resolve_tokenizer(md, task)
        c = m = max(1, L // 4)
        n = tc._int(md, "n_docs", DEFAULT_N_DOCS, minimum=3)
        # passage i takes its filler from span i+1 and its control head from span i+2: unrelated text
        spans = pick_spans(tc.tokenized_docs(md, task, tok), c + m + 8 * L, n, tc.seed_of(md), task)
        if len(spans) < 3:
            raise DataError(f"{task}: needs three spans of {c + m + 8 * L} tokens of held-out text; "
                            f"found {len(spans)}")
        rows = []
        for i, (name, ids) in enumerate(spans):
            filler = spans[(i + 1) % len(spans)][1][c + m:]
            heads = (tok.decode(ids[:c + m]), tok.decode(spans[(i + 2) % len(spans)][1][:c + m]))
            fill = [tok.decode(filler[:k * L - c - 2 * m]) for k in MULTIPLES]
            rows.append({"span": name, "context": tok.decode(ids[:c]), "passage": tok.decode(ids[c:c + m]),
                         "n_tokens": m, "second_ctx": [h + f for h in heads for f in fill]})
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

    def construct_requests(self, doc, ctx, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        contexts = [doc["context"]] + doc["second_ctx"]
        return [Instance(request_type="loglikelihood", doc=doc, arguments=(x, doc["passage"]), idx=i, **kwargs)
                for i, x in enumerate(contexts)]

    def _process_results(self, doc, results):
        nll = [-float(r[0]) for r in results]
        n = doc["n_tokens"]
        second, control = nll[1:1 + len(MULTIPLES)], nll[1 + len(MULTIPLES):]
        out = {"copy_nll_first": (nll[0], n)}
        for k, s, ctl in zip(MULTIPLES, second, control):
            out[f"copy_gain_{k}x"] = (ctl - s, n)
            out[f"copy_drop_{k}x"] = (nll[0] - s, n)
        return out
