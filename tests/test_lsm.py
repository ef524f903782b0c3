"""Long-Short Misalignment in lm-eval: the ``lsm`` request, the olh_lsm tasks, the approximation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest_olh import ARCHS, olh_ckpts, olh_offline_env  # noqa: F401  (fixtures)

from lm_eval.api.instance import Instance

from olharness import TASKS_DIR
from olharness.lsm import approx_divergences, candidate_distribution
from olharness.model import OLM
from olharness.tasks_lsm import build_rows
from trainer.errors import OLHError

TEXT = ("Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement, "
        "never took up any book but the Baronetage; there he found occupation for an idle hour.")


@pytest.fixture(scope="module")
def lms(olh_ckpts):
    return {a: OLM(pretrained=str(olh_ckpts[a]), device="cpu", batch_size=4) for a in ARCHS}


def last_logits(lm: OLM, ids: list[int]) -> torch.Tensor:
    """Next-token logits after one unpadded view (the head applied to the last position only, as the
    adapter does: a KL of two near-equal distributions moves by ~1e-7 with the matmul's shape)."""
    with torch.no_grad():
        if lm.backend == "causal":
            h = lm.model(torch.tensor([ids]), head=False)
        else:
            h = lm.model(torch.tensor([ids]), torch.tensor([[lm.tok.bos_id]]), head=False)
        return lm.model.output_head(h[0, -1]).double()


def hand_sce(long_logits, short_logits) -> tuple[float, float]:
    """SCE(p, q) = -sum p log q - sum q log p, and KL(p||q) + KL(q||p), written out."""
    lp, lq = F.log_softmax(long_logits, -1), F.log_softmax(short_logits, -1)
    p, q = lp.exp(), lq.exp()
    sce = -(p * lq).sum() - (q * lp).sum()
    skl = (p * (lp - lq)).sum() + (q * (lq - lp)).sum()
    return float(sce), float(skl)


@pytest.mark.parametrize("arch", ARCHS)
def test_lsm_equals_hand_sce(lms, arch):
    lm = lms[arch]
    ids = lm.tok.encode(TEXT)
    cases = [(5, 20), (12, 12), (1, len(ids))]
    got = lm.lsm([Instance("lsm", {}, (TEXT, s, l), 0) for s, l in cases], disable_tqdm=True)
    for (s, l), r in zip(cases, got):
        sce, skl = hand_sce(last_logits(lm, ids[-l:]), last_logits(lm, ids[-s:]))
        assert r["lsm"] == pytest.approx(sce, rel=1e-5, abs=1e-6)
        assert r["lsm_symkl"] == pytest.approx(skl, abs=1e-6)
    assert got[1]["lsm_symkl"] == pytest.approx(0.0, abs=1e-9)  # same view twice
    assert got[1]["lsm"] > 0  # SCE keeps the entropy terms


def test_lsm_divergence_option_and_bad_requests(lms):
    from trainer.alignment.divergences import build_divergence

    lm = lms["decoder"]
    ids = lm.tok.encode(TEXT)
    a, b = last_logits(lm, ids[-30:])[None], last_logits(lm, ids[-7:])[None]
    for name, direction in [("js", "long_short"), ("kl", "short_long"), ("l2", "long_short")]:
        (r,) = lm.lsm([Instance("lsm", {}, (TEXT, 7, 30, {"divergence": name, "kl_direction": direction}), 0)],
                      disable_tqdm=True)
        want = build_divergence(name, direction, on_logits=False)(F.log_softmax(a, -1), F.log_softmax(b, -1))  # float64
        assert r["lsm"] == pytest.approx(float(want[0]), abs=1e-9)
    with pytest.raises(OLHError, match="unknown divergence 'hellinger'; valid: sce"):
        lm.lsm([Instance("lsm", {}, (TEXT, 7, 30, {"divergence": "hellinger"}), 0)])
    with pytest.raises(OLHError, match="fewer than l_long"):
        lm.lsm([Instance("lsm", {}, ("short text", 2, 500), 0)])
    with pytest.raises(OLHError, match="l_short <= l_long"):
        lm.lsm([Instance("lsm", {}, (TEXT, 9, 3), 0)])


def test_approximation_helpers():
    d = candidate_distribution([math.log(0.5), math.log(0.25)])
    assert d.exp().tolist() == pytest.approx([0.5, 0.25, 0.25])
    same = approx_divergences([-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0])
    assert same["lsm_symkl"] == pytest.approx(0.0, abs=1e-12) and same["lsm"] > 0
    p, q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    r = approx_divergences(p[:2].log().tolist(), q[:2].log().tolist())
    assert r["lsm"] == pytest.approx(float(-(p * q.log()).sum() - (q * p.log()).sum()), rel=1e-6)  # divergences run in float32
    with pytest.raises(OLHError):
        approx_divergences([-1.0], [-1.0, -2.0])


class _Tok:
    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids) + " "


def test_build_rows_seeded_and_in_range():
    docs = [("a", list(range(300))), ("b", list(range(100, 140))), ("c", list(range(500, 900)))]
    rows = build_rows(docs, _Tok(), 32, (0.5, 1.0), 20, seed=7)
    assert rows == build_rows(docs, _Tok(), 32, (0.5, 1.0), 20, seed=7)
    assert rows != build_rows(docs, _Tok(), 32, (0.5, 1.0), 20, seed=8)
    assert all(16 <= r["l_short"] <= r["l_long"] <= 32 for r in rows)
    assert {r["doc"] for r in rows} == {"a", "b", "c"}
    assert all(len(r["text"].split()) >= r["l_long"] for r in rows)
    far = build_rows(docs, _Tok(), 32, (2.0, 4.0), 6, seed=7, n_candidates=5)
    assert all(64 <= r["l_short"] <= r["l_long"] <= 128 and r["doc"] != "b" for r in far)
    assert all(len(r["candidates"]) >= 5 and r["ctx_long"].endswith(r["ctx_short"]) for r in far)
    with pytest.raises(OLHError, match="no held-out document"):
        build_rows(docs, _Tok(), 1000, (0.5, 1.0), 2, seed=0)


def _evaluate(model, tasks, metadata, **kw):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=[TASKS_DIR], include_defaults=False, metadata=metadata)
    return simple_evaluate(model=model, tasks=tasks, task_manager=tm, **kw)


@pytest.mark.parametrize("arch", ["decoder", "encdec"])
def test_olh_lsm_task_equals_hand_metric(lms, olh_ckpts, arch):
    lm = lms[arch]
    out = _evaluate(lm, ["olh_lsm"], {"run_dir": str(olh_ckpts[arch]), "n_docs": 5, "seed": 3}, log_samples=True)
    res, samples = out["results"]["olh_lsm"], out["samples"]["olh_lsm"]
    assert len(samples) == 5
    hand = []
    for s in samples:
        doc = s["doc"]
        assert 16 <= doc["l_short"] <= doc["l_long"] <= 32  # tiny preset: l_train = 32
        ids = lm.tok.encode(doc["text"])
        hand.append(hand_sce(last_logits(lm, ids[-doc["l_long"]:]), last_logits(lm, ids[-doc["l_short"]:])))
    assert res["lsm,none"] == pytest.approx(sum(h[0] for h in hand) / 5, rel=1e-5)
    assert res["lsm_symkl,none"] == pytest.approx(sum(h[1] for h in hand) / 5, rel=1e-4, abs=1e-7)


def hand_js(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence of two probability vectors, written out (natural log)."""
    m = (p + q) / 2
    return float(0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum())


def test_olh_lsm_ll_and_divergence_metadata(tiny_run):
    run = str(tiny_run("decoder"))  # trained a little: its predictions depend on the context
    lm = OLM(pretrained=run, device="cpu", batch_size=4)
    md = {"run_dir": run, "n_docs": 3, "divergence": "js"}
    out = _evaluate(lm, ["olh_lsm_ll", "olh_lsm_1x_2x"], md, log_samples=True)
    r = out["results"]
    # the approximation by hand: p(c | view) of every candidate, the rest of the mass pooled into one
    # "other" outcome, then JS between the long and the short view's K+1 outcomes
    approx = []
    for s in out["samples"]["olh_lsm_ll"]:
        doc = s["doc"]
        dist = []
        for view in ("ctx_long", "ctx_short"):
            ll = lm.loglikelihood([Instance("loglikelihood", {}, (doc[view], c), 0) for c in doc["candidates"]],
                                  disable_tqdm=True)
            p = torch.tensor([x for x, _ in ll], dtype=torch.float64).exp()
            full = torch.cat([p, (1 - p.sum()).clamp(min=1e-12)[None]])
            dist.append(full / full.sum())
        approx.append(hand_js(*dist))
    assert len(approx) == 3 and max(approx) > 1e-8  # tiny: the pooled 'other' outcome holds most mass
    assert r["olh_lsm_ll"]["lsm_ll_approx,none"] == pytest.approx(sum(approx) / 3, rel=1e-4)
    # the exact metric with divergence=js beyond the training length, against two direct forward passes
    exact = []
    for s in out["samples"]["olh_lsm_1x_2x"]:
        doc = s["doc"]
        assert 32 <= doc["l_short"] <= doc["l_long"] <= 64
        ids = lm.tok.encode(doc["text"])
        a, b = (F.softmax(last_logits(lm, ids[-n:]), -1) for n in (doc["l_long"], doc["l_short"]))
        exact.append(hand_js(a, b))
    assert r["olh_lsm_1x_2x"]["lsm,none"] == pytest.approx(sum(exact) / 3, rel=1e-4, abs=1e-9)
    # the results say which divergence was scored (a report labels its column from this)
    for task in ("olh_lsm_ll", "olh_lsm_1x_2x"):
        assert out["configs"][task]["metadata"]["divergence"] == "js"
    assert _evaluate(lm, ["olh_lsm"], {**md, "divergence": None, "n_docs": 1})["configs"]["olh_lsm"]["metadata"][
        "divergence"] == "sce"


def test_bad_metadata_and_models_without_lsm(lms, olh_ckpts):
    from lm_eval.api.registry import get_model

    run = str(olh_ckpts["decoder"])
    with pytest.raises(OLHError, match="unknown metadata key.*l_trian.*valid: l_train, run_dir"):
        _evaluate(lms["decoder"], ["olh_lsm"], {"run_dir": run, "l_trian": 32})
    with pytest.raises(OLHError, match="unknown divergence 'cosine'"):
        _evaluate(lms["decoder"], ["olh_lsm"], {"run_dir": run, "divergence": "cosine"})
    with pytest.raises(OLHError, match="training length is unknown"):
        _evaluate(lms["decoder"], ["olh_lsm"], {"tokenizer": run})
    # a model without `lsm`: lm-eval's own AttributeError (olharness patches none of lm-eval's classes;
    # the olharness command turns it into one line naming the alternatives: test_olharness_registration)
    from lm_eval.api.model import LM

    with pytest.raises(AttributeError, match="'DummyLM' object has no attribute 'lsm'") as e:
        _evaluate(get_model("dummy")(), ["olh_lsm"], {"run_dir": run, "n_docs": 2})
    assert not hasattr(LM, "lsm")
    from olharness.cli import user_error

    assert "cannot answer lsm requests (task olh_lsm); use --model ol" in user_error(e.value)
    # model arguments that lm-eval merges into the metadata are accepted
    out = _evaluate(lms["rnn"], ["olh_lsm"], {"run_dir": str(olh_ckpts["rnn"]), "n_docs": 2, "pretrained": run,
                                             "dtype": "float32", "trust_remote_code": True})
    assert out["results"]["olh_lsm"]["lsm,none"] > 0
