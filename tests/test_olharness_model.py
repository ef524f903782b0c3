"""The ``ol`` lm-eval model: log-likelihoods, rolling windows, generation, truncation, arguments."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest_olh import ARCHS, olh_ckpts, olh_offline_env  # noqa: F401  (fixtures)

from lm_eval.api.instance import Instance

from olharness.model import OLM
from trainer.errors import CheckpointError, OLHError

TEXT = ("Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement, "
        "never took up any book but the Baronetage.")
PAIRS = [("Sir Walter Elliot, of", " Kellynch Hall"), ("He was", " a man"), ("He was", " b"),
         ("", "Anne Elliot"), ("The book ", "was open.")]
# sum log p(continuation | context) of the seeded tiny models (tests/conftest_olh.py), for PAIRS[0]
GOLDEN = {"decoder": -62.9007, "encdec": -62.8840, "rnn": -62.6113}


def req(kind, *args):
    return Instance(kind, {}, tuple(args), 0)


@pytest.fixture(scope="module")
def lms(olh_ckpts):
    return {a: OLM(pretrained=str(olh_ckpts[a]), device="cpu", batch_size=3) for a in ARCHS}


def direct_ll(lm: OLM, context: str, continuation: str) -> float:
    """log p(continuation | context) by one plain forward pass (the definition, no lm-eval code)."""
    tok, m = lm.tok, lm.model
    if not context:
        ctx, cont = [tok.eos_id], tok.encode(continuation)
    else:
        n_sp = len(context) - len(context.rstrip())  # lm-eval moves trailing spaces to the continuation
        context, continuation = context[:len(context) - n_sp], context[len(context) - n_sp:] + continuation
        whole, ctx = tok.encode(context + continuation), tok.encode(context)
        cont = whole[len(ctx):] if lm.backend == "causal" else tok.encode(continuation)
    with torch.no_grad():
        if lm.backend == "causal":
            x = torch.tensor([ctx + cont])
            logp = F.log_softmax(m(x[:, :-1]).float(), -1)[0, len(ctx) - 1:]
        else:
            logp = F.log_softmax(m(torch.tensor([ctx]), torch.tensor([[tok.bos_id] + cont[:-1]])).float(), -1)[0]
    return float(logp.gather(1, torch.tensor(cont)[:, None]).sum())


@pytest.mark.parametrize("arch", ARCHS)
def test_loglikelihood_equals_forward_pass(lms, arch):
    lm = lms[arch]
    assert lm.backend == ("seq2seq" if arch == "encdec" else "causal")
    got = lm.loglikelihood([req("loglikelihood", c, x) for c, x in PAIRS], disable_tqdm=True)
    for (c, x), (ll, greedy) in zip(PAIRS, got):
        assert ll == pytest.approx(direct_ll(lm, c, x), abs=1e-4)
        assert isinstance(greedy, bool)
    assert got[0][0] == pytest.approx(GOLDEN[arch], abs=2e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_size_does_not_change_results(olh_ckpts, lms, arch):
    one = OLM(pretrained=str(olh_ckpts[arch]), device="cpu", batch_size=1)
    reqs = [req("loglikelihood", c, x) for c, x in PAIRS]
    a, b = one.loglikelihood(reqs, disable_tqdm=True), lms[arch].loglikelihood(reqs, disable_tqdm=True)
    assert [x[0] for x in a] == pytest.approx([x[0] for x in b], abs=1e-4)


def hand_rolling(lm: OLM, text: str, L: int) -> float:
    """lm-eval's rolling rule written out: the first L tokens from [EOS] + prefix, then each next
    block of up to L tokens predicted with the L tokens before its last target as input."""
    t = lm.tok.encode(text)
    total, pos = 0.0, 0
    with torch.no_grad():
        while pos < len(t):
            end = min(pos + L, len(t))
            inp = ([lm.tok.eos_id] + t)[max(0, end - L):end]  # L inputs ending right before t[end-1]
            logp = F.log_softmax(lm.model(torch.tensor([inp])).float(), -1)[0]
            n = end - pos
            total += float(logp[-n:].gather(1, torch.tensor(t[pos:end])[:, None]).sum())
            pos = end
    return total


@pytest.mark.parametrize("arch", ["decoder", "rnn"])
def test_rolling_equals_hand_loop(olh_ckpts, arch):
    lm = OLM(pretrained=str(olh_ckpts[arch]), device="cpu", batch_size=2, max_length=16)
    text = TEXT * 2
    (got,) = lm.loglikelihood_rolling([req("loglikelihood_rolling", text)], disable_tqdm=True)
    assert len(lm.tok.encode(text)) > 3 * 16  # several windows
    assert got == pytest.approx(hand_rolling(lm, text, 16), abs=1e-3)
    # one window when max_length covers the text: the plain definition
    big = OLM(pretrained=str(olh_ckpts[arch]), device="cpu", max_length=256)
    (whole,) = big.loglikelihood_rolling([req("loglikelihood_rolling", text)], disable_tqdm=True)
    assert whole == pytest.approx(direct_ll(big, "", text), abs=1e-3)


def hand_greedy(lm: OLM, context: str, n: int) -> list[int]:
    ids, out = lm.tok.encode(context), []
    with torch.no_grad():
        for _ in range(n):
            if lm.backend == "causal":
                logits = lm.model(torch.tensor([ids + out]))[0, -1]
            else:
                logits = lm.model(torch.tensor([ids]), torch.tensor([[lm.tok.bos_id] + out]))[0, -1]
            nxt = int(logits.argmax())
            if nxt == lm.tok.eos_id:
                break
            out.append(nxt)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_greedy_incremental_equals_full_recompute(lms, arch):
    lm = lms[arch]
    (got,) = lm.generate_until([req("generate_until", "Anne said", {"until": ["@@@"], "max_gen_toks": 12})],
                               disable_tqdm=True)
    assert got == lm.tok.decode(hand_greedy(lm, "Anne said", 12))


def test_generate_stop_sequences_and_sampling(lms):
    lm = lms["decoder"]
    full = lm.tok.decode(hand_greedy(lm, "Anne said", 12))
    stop = full[3:5] if len(full) >= 5 else full[-1:]
    (cut,) = lm.generate_until([req("generate_until", "Anne said", {"until": [stop], "max_gen_toks": 12})],
                               disable_tqdm=True)
    assert full.startswith(cut) and stop not in cut and len(cut) < len(full)
    sample = {"until": ["@@@"], "max_gen_toks": 8, "do_sample": True, "temperature": 1.0}
    torch.manual_seed(0)
    a = lm.generate_until([req("generate_until", "Anne said", sample)] * 2, disable_tqdm=True)
    torch.manual_seed(0)
    b = lm.generate_until([req("generate_until", "Anne said", sample)] * 2, disable_tqdm=True)
    assert a == b and len(a) == 2  # seeded sampling is reproducible
    top1 = dict(sample, top_k=1, max_gen_toks=12)
    (g,) = lm.generate_until([req("generate_until", "Anne said", top1)], disable_tqdm=True)
    assert g == full  # top_k=1 sampling is greedy


def test_middle_truncation(olh_ckpts):
    from olharness.tokens import middle_truncate

    lm = OLM(pretrained=str(olh_ckpts["decoder"]), device="cpu", max_length=16, truncation="middle")
    ctx, cont = TEXT, " Anne"
    c_ids, whole = lm.tok.encode(ctx), lm.tok.encode(ctx + cont)
    cont_ids = whole[len(c_ids):]
    kept = middle_truncate(c_ids, 17 - len(cont_ids))
    assert len(kept) < len(c_ids)
    with torch.no_grad():
        x = torch.tensor([kept + cont_ids])
        logp = F.log_softmax(lm.model(x[:, :-1]).float(), -1)[0, len(kept) - 1:]
    want = float(logp.gather(1, torch.tensor(cont_ids)[:, None]).sum())
    ((got, _),) = lm.loglikelihood([req("loglikelihood", ctx, cont)], disable_tqdm=True)
    assert got == pytest.approx(want, abs=1e-4)


def test_device_batch_size_and_bad_arguments(olh_ckpts, tmp_path):
    run = str(olh_ckpts["rnn"])
    lm = OLM(pretrained=run, device="cuda:0" if not torch.cuda.is_available() else "cpu", batch_size="4")
    assert lm.device.type == "cpu" and lm.batch_size == 4
    assert OLM(pretrained=run, device="cpu", batch_size="auto:2").batch_size >= 1
    assert OLM(pretrained=run, device=None, batch_size=None).batch_size == 1
    with pytest.raises(OLHError, match="batch_size"):
        OLM(pretrained=run, device="cpu", batch_size="lots")
    with pytest.raises(OLHError, match="unknown model argument.*foo"):
        OLM(pretrained=run, foo=1)
    with pytest.raises(OLHError, match="truncation"):
        OLM(pretrained=run, truncation="right")
    with pytest.raises(CheckpointError, match="does not exist"):
        OLM(pretrained=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        OLM(pretrained=str(tmp_path / "empty"))
