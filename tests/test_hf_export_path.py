"""Our decoder -> olh-export-hf -> fine-tuned as --arch hf -> scored by lm-eval's hf model: the same
training steps and the same scores as the native path (init_from + rope_scaling, scored by ol)."""
from __future__ import annotations

import pytest

from tests.helpers import metrics, train_tiny

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

import olharness  # noqa: E402,F401  (registers ol, hf-lsm)

EXTEND = dict(rope_scaling="pi", rope_scale=2.0, seq_len=64, max_steps=3, alpha=0.1, lr=3e-3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_path")
    pre = train_tiny(root / "pre", max_steps=5, alpha=0.0)  # our decoder, pretrained at L = 32
    native = train_tiny(root / "native", init_from=str(pre), **EXTEND)
    via_hf = train_tiny(root / "hf", arch="hf", init_from=str(pre), trust_remote_code=True, **EXTEND)
    return native, via_hf


def test_fine_tune_through_hf_takes_the_native_steps(runs):
    native, via_hf = runs
    assert (via_hf / "init_hf" / "modeling_olh.py").exists()  # exported, then loaded as custom code
    a, b = metrics(native), metrics(via_hf)
    assert [r["loss"] for r in b] == [r["loss"] for r in a] and [r["l_extra"] for r in b] == [r["l_extra"] for r in a]


def test_saved_hf_directory_scores_like_ol(runs):
    native, via_hf = runs
    ol = get_model("ol")(pretrained=str(native), device="cpu", batch_size=4)
    hf = get_model("hf-lsm")(pretrained=str(via_hf / "checkpoint" / "hf"), trust_remote_code=True, device="cpu",
                             batch_size=4, dtype="float32")
    assert hf.max_length == ol.max_length == 8 * EXTEND["seq_len"]
    text = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
            "must be in want of a wife. However little known the feelings or views of such a man may be. ") * 3
    ll = [Instance("loglikelihood", {}, (text[:120], text[120:300]), 0),
          Instance("loglikelihood", {}, ("", text[:200]), 1)]
    for x, y in zip(ol.loglikelihood(ll), hf.loglikelihood(ll)):
        assert y[0] == pytest.approx(x[0], rel=1e-5)
    lsm = [Instance("lsm", {}, (text, 20, 60), 0), Instance("lsm", {}, (text, 40, 120), 1)]
    for x, y in zip(ol.lsm(lsm), hf.lsm(lsm)):
        assert y["lsm"] == pytest.approx(x["lsm"], rel=1e-5)
