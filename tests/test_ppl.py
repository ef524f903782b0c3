"""olh_ppl_len: perplexity by context length and NLL by position bucket, against hand loops."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest_olh import olh_ckpts, olh_offline_env  # noqa: F401  (fixtures)

from olharness import TASKS_DIR
from olharness.model import OLM
from olharness.tasks_ppl import count_words, pick_spans
from trainer.errors import DataError


def test_count_words_counts_each_word_once_per_span():
    text = "It is a truth universally acknowledged, that a single man"
    for cuts in ([], [7], [3, 20, 33], [1, 2, 50]):
        bounds = [0, *cuts, len(text)]
        parts = [text[a:b] for a, b in zip(bounds, bounds[1:])]
        assert sum(count_words(p, prev) for prev, p in zip([""] + parts, parts)) == 10


def test_pick_spans_seeded_disjoint():
    docs = [("a", list(range(1000))), ("b", list(range(5000, 5300)))]
    s = pick_spans(docs, 100, 5, seed=1, task="t")
    assert s == pick_spans(docs, 100, 5, seed=1, task="t") and len(s) == 5
    starts = [(n.split("@")[0], int(n.split("@")[1])) for n, _ in s]
    assert len(set(starts)) == 5 and all(st % 100 == 0 for _, st in starts)
    assert len(pick_spans(docs, 100, 50, seed=1, task="t")) == 13  # all there are
    with pytest.raises(DataError, match="8 x l_train"):
        pick_spans(docs, 2000, 1, seed=0, task="t")


def chunk_ll(lm: OLM, text: str) -> tuple[float, list[float]]:
    """Sum and per-token log p of a chunk scored from [EOS] in one forward pass."""
    t = lm.tok.encode(text)
    with torch.no_grad():
        logp = F.log_softmax(lm.model(torch.tensor([[lm.tok.eos_id] + t[:-1]])).float(), -1)[0]
    per = logp.gather(1, torch.tensor(t)[:, None])[:, 0].tolist()
    return sum(per), per


def test_olh_ppl_len_equals_hand_loop(olh_ckpts):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    run = str(olh_ckpts["decoder"])
    lm = OLM(pretrained=run, device="cpu", batch_size=4)
    tm = TaskManager(include_path=[TASKS_DIR], include_defaults=False, metadata={"run_dir": run, "n_docs": 2})
    out = simple_evaluate(model=lm, tasks=["olh_ppl_len"], task_manager=tm, log_samples=True)
    L = 32
    spans = {}
    for k in (1, 2, 4, 8):
        name = f"olh_ppl_len_{k}x"
        res, samples = out["results"][name], out["samples"][name]
        assert len(samples) == 2 * 8 // k
        total = n_tok = n_words = n_bytes = 0
        buckets: dict[str, list[float]] = {}
        for s in samples:
            doc = s["doc"]
            assert doc["n_tokens"] == k * L
            spans.setdefault(k, {}).setdefault(doc["span"], []).append(doc["text"])
            ll, per = chunk_ll(lm, doc["text"])
            if len(per) != k * L:  # tokenization of the decoded chunk must round-trip for exact buckets
                pytest.skip("decoded chunk does not re-tokenize to the same length")
            total, n_tok = total + ll, n_tok + len(per)
            n_words, n_bytes = n_words + doc["n_words"], n_bytes + doc["n_bytes"]
            for a, b in [(0, 1), (1, 2), (2, 4), (4, 8)]:
                if b <= k:
                    buckets.setdefault(f"nll_{a}-{b}x", []).extend(-x for x in per[a * L:b * L])
        assert res["token_perplexity,none"] == pytest.approx(math.exp(-total / n_tok), rel=1e-4)
        assert res["word_perplexity,none"] == pytest.approx(math.exp(-total / n_words), rel=1e-4)
        assert res["bits_per_byte,none"] == pytest.approx(-total / n_bytes / math.log(2), rel=1e-4)
        assert set(k_ for k_ in res if k_.startswith("nll_") and "stderr" not in k_) == {f"{b},none" for b in buckets}
        for b, vals in buckets.items():
            assert res[f"{b},none"] == pytest.approx(sum(vals) / len(vals), rel=1e-3)
            first = buckets["nll_0-1x"]
            if b != "nll_0-1x":  # length generalization: far bucket minus the first, same chunks
                assert res[f"excess_{b[4:]},none"] == pytest.approx(sum(vals) / len(vals) - sum(first) / len(first),
                                                                   abs=1e-3)
    # the four lengths score the same text: per span, the chunks join to the same string
    for name in spans[8]:
        assert {"".join(spans[k][name]) for k in (1, 2, 4, 8)} == {"".join(spans[8][name])}
