"""Hugging Face interoperability: export a checkpoint, score it with lm-eval's hf / hf-lsm, compare to ol."""
from __future__ import annotations

import pytest
import torch

import accelerate  # noqa: F401  (lm-eval's hf model needs it)
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

import olharness  # noqa: F401  (registers ol, hf-lsm)
from olharness.export_hf import export
from tests.conftest_olh import build_checkpoint, olh_ckpts, olh_offline_env  # noqa: F401  (fixtures)
from trainer.errors import OLHError


def req(kind, *args):
    return Instance(kind, {}, tuple(args), 0)


@pytest.fixture(scope="module")
def exported(olh_ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "decoder"
    export(olh_ckpts["decoder"], out)
    return out


@pytest.fixture(scope="module")
def pair(olh_ckpts, exported):
    ol = get_model("ol")(pretrained=str(olh_ckpts["decoder"]), device="cpu", batch_size=4)
    hf = get_model("hf-lsm")(pretrained=str(exported), trust_remote_code=True, device="cpu", batch_size=4,
                             dtype="float32")
    return ol, hf


def test_exported_tokenizer_gives_our_ids(pair):
    from trainer.data import load_corpus

    ol, hf = pair
    texts = load_corpus("austen").heldout + [" leading space", "a\n\nb\n", "tab\there  ", "é ü 你好 ☃", "</s><s>x"]
    for t in texts:
        assert hf.tok_encode(t) == ol.tok_encode(t)
        assert hf.tokenizer.decode(hf.tok_encode(t)) == t
    assert hf.prefix_token_id == ol.prefix_token_id == ol.eot_token_id
    assert hf.max_length == ol.max_length


def test_hf_and_ol_loglikelihoods_match(pair):
    from trainer.data import load_corpus

    ol, hf = pair
    text = load_corpus("austen").heldout[0]
    reqs = [req("loglikelihood", text[:i], text[i:i + 30]) for i in range(1, 1400, 97)]
    reqs += [req("loglikelihood", "", text[:40]), req("loglikelihood", "Anne was", " a"), req("loglikelihood", "Anne was", " b")]
    a, b = ol.loglikelihood(reqs, disable_tqdm=True), hf.loglikelihood(reqs, disable_tqdm=True)
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b)) < 1e-4
    assert [x[1] for x in a] == [y[1] for y in b]
    rol = [req("loglikelihood_rolling", t[:3000]) for t in load_corpus("austen").heldout]
    assert ol.loglikelihood_rolling(rol, disable_tqdm=True) == pytest.approx(
        hf.loglikelihood_rolling(rol, disable_tqdm=True), abs=1e-3)
    lsm = [req("lsm", text[:600], 9, 30), req("lsm", text[:900], 20, 21, {"divergence": "js"})]
    for x, y in zip(ol.lsm(lsm, disable_tqdm=True), hf.lsm(lsm, disable_tqdm=True)):
        assert x == pytest.approx(y, abs=1e-5)
    g = [req("generate_until", "Anne said", {"until": ["@@"], "max_gen_toks": 6})]
    assert ol.generate_until(g, disable_tqdm=True) == hf.generate_until(g, disable_tqdm=True)


@pytest.mark.parametrize("arch,pe", [("decoder", "learned"), ("decoder", "alibi"), ("rnn", "rope")])
def test_export_logits_equal_for_other_families(tmp_path, arch, pe):
    from transformers import AutoModelForCausalLM

    from trainer.checkpoint import load_model

    run = build_checkpoint(tmp_path, arch, pe, seed=1)
    export(run, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    ref, _, _ = load_model(run)
    x = torch.randint(4, 500, (2, 40))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, ref(x), atol=1e-5)


def test_export_rejects_seq2seq_and_missing_dirs(olh_ckpts, tmp_path):
    with pytest.raises(OLHError, match="only causal"):
        export(olh_ckpts["encdec"], tmp_path / "x")
    with pytest.raises(OLHError, match="does not exist"):
        export(tmp_path / "nope", tmp_path / "y")
