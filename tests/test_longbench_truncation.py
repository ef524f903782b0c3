"""Middle truncation (THUDM pred.py semantics) and the ``hf-mid`` model that applies it."""

from __future__ import annotations

import pytest

from olharness.tokens import middle_truncate


def test_short_prompts_are_unchanged():
    assert middle_truncate([1, 2, 3], 3) == [1, 2, 3]
    assert middle_truncate([1, 2, 3], 10) == [1, 2, 3]
    assert middle_truncate([], 0) == []
    assert middle_truncate((4, 5), 2) == [4, 5]  # any sequence in, a list out


def test_keeps_first_and_last_halves():
    ids = list(range(10))
    assert middle_truncate(ids, 4) == [0, 1, 8, 9]
    assert middle_truncate(ids, 6) == [0, 1, 2, 7, 8, 9]
    assert middle_truncate(ids, 9) == [0, 1, 2, 3, 6, 7, 8, 9]  # odd budget: 2 * (9 // 2) = 8 kept
    assert middle_truncate(ids, 2) == [0, 9]


def test_matches_thudm_slicing():
    """THUDM: half = int(max_length/2); ids[:half] + ids[-half:] (for budgets >= 2)."""
    ids = list(range(101))
    for budget in range(2, 101):
        half = int(budget / 2)
        assert middle_truncate(ids, budget) == ids[:half] + ids[-half:]


def test_bad_budgets():
    with pytest.raises(ValueError):
        middle_truncate([1, 2], -1)
    with pytest.raises(ValueError, match="at least 2"):
        middle_truncate([1, 2, 3], 1)  # THUDM's ids[-0:] would silently keep everything
    with pytest.raises(ValueError):
        middle_truncate([1, 2, 3], 0)
    assert middle_truncate([7], 1) == [7]  # no truncation needed: fine


# ----------------------------------------------------------------------------------------- hf-mid
@pytest.fixture(scope="module")
def tiny_hf():
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(100)]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=len(vocab), n_positions=128, n_embd=16, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=2
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    return model, tok, words


def _spy_generate(lm):
    seen = []
    orig = lm._model_generate

    def spy(context, **kw):
        seen.append(context.tolist())
        return orig(context=context, **kw)

    lm._model_generate = spy
    return seen


def test_hf_mid_registered_without_hiding_builtins():
    from lm_eval.api.registry import get_model

    import olharness.longbench.hf_mid as hm

    assert get_model("hf-mid") is hm.HFMidLM
    assert get_model("hf").__name__ == "HFLM"
    assert get_model("dummy").__name__ == "DummyLM"


def test_hf_mid_middle_truncates_generation_prompts(tiny_hf):
    from lm_eval.api.instance import Instance

    from olharness.longbench.hf_mid import HFMidLM

    model, tok, words = tiny_hf
    lm = HFMidLM(pretrained=model, tokenizer=tok, max_length=40, device="cpu", batch_size=1)
    prompt = " ".join(words[:60])  # 60 tokens
    full = tok(prompt)["input_ids"]
    seen = _spy_generate(lm)
    req = Instance("generate_until", {}, (prompt, {"until": [], "max_gen_toks": 6, "do_sample": False}), 0)
    (out,) = lm.generate_until([req])
    # default budget: max_length - max_gen_toks = 34 -> first 17 + last 17 ids
    assert seen[0] == [middle_truncate(full, 34)]
    assert seen[0][0][:17] == full[:17] and seen[0][0][17:] == full[-17:]
    assert isinstance(out, str) and len(out.split()) <= 6
    assert lm.n_truncated == 1

    # a short prompt is untouched
    seen.clear()
    lm.generate_until([Instance("generate_until", {}, ("w1 w2 w3", {"until": [], "max_gen_toks": 2}), 0)])
    assert seen[0] == [tok("w1 w2 w3")["input_ids"]]


def test_hf_mid_fixed_prompt_budget_and_batches(tiny_hf):
    from lm_eval.api.instance import Instance

    from olharness.longbench.hf_mid import HFMidLM

    model, tok, words = tiny_hf
    lm = HFMidLM(pretrained=model, tokenizer=tok, max_length=100, device="cpu", batch_size=2, prompt_budget=20)
    long_p, short_p = " ".join(words[:50]), " ".join(words[:5])
    seen = _spy_generate(lm)
    gen = {"until": [], "max_gen_toks": 3}
    reqs = [Instance("generate_until", {}, (p, dict(gen)), i) for i, p in enumerate([long_p, short_p])]
    lm.generate_until(reqs)
    (batch,) = seen
    pad = tok.pad_token_id
    assert batch[0] == middle_truncate(tok(long_p)["input_ids"], 20)  # THUDM-style fixed budget
    assert batch[1] == [pad] * 15 + tok(short_p)["input_ids"]  # left-padded


def test_hf_left_truncates_for_contrast(tiny_hf):
    """lm-eval's plain ``hf`` keeps only the end of the prompt: why ``hf-mid`` exists."""
    from lm_eval.models.huggingface import HFLM

    model, tok, words = tiny_hf
    lm = HFLM(pretrained=model, tokenizer=tok, max_length=40, device="cpu", batch_size=1)
    ids, _ = lm.tok_batch_encode([" ".join(words[:60])], left_truncate_len=34)
    assert ids.tolist()[0] == tok(" ".join(words[:60]))["input_ids"][-34:]


def test_task_module_registers_hf_mid_lazily():
    """Importing the task module (what the task YAMLs do) registers ``hf-mid`` without importing
    torch, and keeps the built-in models."""
    import subprocess
    import sys

    code = (
        "import sys, olharness.longbench.task\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "from lm_eval.api.registry import get_model\n"
        "print(get_model('hf-mid').__name__, get_model('hf').__name__, get_model('dummy').__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["HFMidLM", "HFLM", "DummyLM"]
