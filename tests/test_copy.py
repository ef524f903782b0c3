"""olh_copy (retrieval by copying) and olh_ppl_len's excess-NLL scores, against hand loops."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest_olh import olh_ckpts, olh_offline_env  # noqa: F401  (fixtures)

from olharness import TASKS_DIR
from olharness.model import OLM
from olharness.tasks_ppl import excess_nll
from trainer.errors import OLHError


def cont_nll(lm: OLM, ctx: str, cont: str) -> tuple[float, int]:
    """Summed NLL of `cont` after `ctx` in one forward pass, split as lm-eval does: the context's
    trailing spaces move to the continuation, then encode(ctx + cont) after encode(ctx)."""
    stripped = ctx.rstrip()
    ids, n = lm.tok.encode(ctx + cont), len(lm.tok.encode(stripped))
    with torch.no_grad():
        logp = F.log_softmax(lm.model(torch.tensor([ids[:-1]])).float(), -1)[0]
    return -sum(logp[j - 1, ids[j]].item() for j in range(n, len(ids))), len(ids)


def test_excess_nll_is_the_difference_of_token_means():
    # two chunks: far bucket (nll sum, tokens), first bucket (nll sum, tokens)
    items = [(10.0, 4, 3.0, 2), (2.0, 4, 9.0, 2)]
    assert excess_nll(items) == pytest.approx(12 / 8 - 12 / 4)


def test_olh_copy_equals_hand_loop_and_its_layout(olh_ckpts):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    run, L = str(olh_ckpts["decoder"]), 32
    lm = OLM(pretrained=run, device="cpu", batch_size=4)
    tm = TaskManager(include_path=[TASKS_DIR], include_defaults=False, metadata={"run_dir": run, "n_docs": 3})
    out = simple_evaluate(model=lm, tasks=["olh_copy"], task_manager=tm, log_samples=True)
    res, samples = out["results"]["olh_copy"], out["samples"]["olh_copy"]
    assert len(samples) == 3
    sums = {k: [0.0, 0.0] for k in (1, 2, 4, 8)}
    first_sum = n_tok = 0.0
    for s in samples:
        doc = s["doc"]
        p = doc["passage"]
        first, _ = cont_nll(lm, doc["context"], p)
        first_sum, n_tok = first_sum + first, n_tok + doc["n_tokens"]
        for i, k in enumerate((1, 2, 4, 8)):
            ctx, ctl = doc["second_ctx"][i], doc["second_ctx"][4 + i]
            # the real context holds the passage once right after its own context; the control never
            assert ctx.startswith(doc["context"] + p) and ctx.count(p) == 1 and p not in ctl
            second, n_ids = cont_nll(lm, ctx, p)
            assert abs(n_ids - k * L) <= 2  # the second copy ends at k * l_train (re-tokenization aside)
            sums[k][0] += cont_nll(lm, ctl, p)[0] - second
            sums[k][1] += first - second
    assert res["copy_nll_first,none"] == pytest.approx(first_sum / n_tok, rel=1e-4)
    for k, (gain, drop) in sums.items():
        assert res[f"copy_gain_{k}x,none"] == pytest.approx(gain / n_tok, abs=1e-4)
        assert res[f"copy_drop_{k}x,none"] == pytest.approx(drop / n_tok, abs=1e-4)


def test_olh_copy_needs_three_spans(olh_ckpts):
    from lm_eval.tasks import TaskManager

    run = str(olh_ckpts["decoder"])
    tm = TaskManager(include_path=[TASKS_DIR], include_defaults=False, metadata={"run_dir": run, "n_docs": 2})
    with pytest.raises(OLHError, match="n_docs must be >= 3"):
        tm.load_task_or_group(["olh_copy"])
