"""The olh mini long-context suite (ours, not LongBench): generator and lm-eval tasks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from olharness.longbench import mini_lc
from olharness.longbench.loading import DataError
from olharness.task_common import load_texts
from trainer.errors import OLHError

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "tests" / "assets" / "longbench" / "mini_lc_text.txt"  # Persuasion, ch. 1-3 (public domain)
TASKS_DIR = REPO / "tasks" / "mini_lc"


def words(s: str) -> int:
    return len(s.split())


@pytest.fixture(scope="module")
def rows():
    return mini_lc.build_mini_lc([TEXT.read_text()], words, l_train=64, seed=0, n_per_bucket=3)


def _blocks(context: str) -> list[tuple[int, str]]:
    out = []
    for block in context.split("\n\n"):
        m = re.fullmatch(r"Paragraph (\d+): (.*)", block, flags=re.S)
        assert m, block
        out.append((int(m.group(1)), m.group(2)))
    return out


def test_shape_and_schema(rows):
    assert len(rows) == 3 * 4 * 3
    for r in rows:
        assert set(r) == {"input", "context", "answers", "length", "dataset", "language", "all_classes", "_id"}
        assert r["language"] == "en" and r["all_classes"] is None and len(r["answers"]) == 1
    ids = [r["_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert ids[:5] == [f"mini_passage_retrieval-{m}x-000" for m in (1, 2, 4, 8)] + ["mini_passage_retrieval-1x-001"]


def test_lengths_fall_in_their_bucket(rows):
    for r in rows:
        m = int(r["_id"].split("-")[1][:-1])
        assert r["length"] == words(mini_lc.render_prompt(r["dataset"], r))
        lo = 0 if m == 1 else m * 64 // 2
        assert lo < r["length"] <= m * 64, r["_id"]
        assert mini_lc.length_bucket(r["length"], 64) == f"{m}x"


def test_answers_are_right(rows):
    for r in rows:
        if r["dataset"] == "mini_passage_retrieval":
            blocks = _blocks(r["context"])
            assert [i for i, _ in blocks] == list(range(1, len(blocks) + 1))
            hits = [i for i, text in blocks if r["input"] in text]
            assert r["answers"] == [f"Paragraph {hits[0]}"] and len(hits) == 1
        elif r["dataset"] == "mini_passage_count":
            blocks = _blocks(r["context"])
            assert r["answers"] == [str(len({t for _, t in blocks}))]
            assert 1 <= int(r["answers"][0]) <= len(blocks)
        else:
            key = r["answers"][0]
            assert re.fullmatch(r"\d{5}", key)
            assert r["context"].count(f"The pass key is {key}. Remember it. {key} is the pass key.") == 1
            assert r["input"] == "What is the pass key?"


def test_deterministic_and_seeded(rows):
    again = mini_lc.build_mini_lc([TEXT.read_text()], words, l_train=64, seed=0, n_per_bucket=3)
    assert again == rows
    other = mini_lc.build_mini_lc([TEXT.read_text()], words, l_train=64, seed=1, n_per_bucket=3)
    assert other != rows
    # a row does not depend on which other datasets are built
    only = mini_lc.build_mini_lc([TEXT.read_text()], words, 64, 0, 3, datasets=["mini_passkey"])
    assert only == [r for r in rows if r["dataset"] == "mini_passkey"]


def test_prompts_are_ours_and_short():
    for d, template in mini_lc.PROMPTS.items():
        assert "{context}" in template and "LongBench" not in template
        assert words(template.format(context="", input="")) < 25
    r = {"context": "Paragraph 1: a b c", "input": "b c"}
    assert mini_lc.render_prompt("mini_passage_retrieval", r) == (
        "Below are numbered paragraphs and an excerpt from one of them.\n\nParagraph 1: a b c\n\n"
        "Excerpt: b c\nThe excerpt is from Paragraph"
    )


def test_bad_inputs():
    with pytest.raises(DataError, match="l_train must be >= 64"):
        mini_lc.build_mini_lc([TEXT.read_text()], words, l_train=32, seed=0, n_per_bucket=1)
    with pytest.raises(DataError, match="unknown dataset"):
        mini_lc.build_mini_lc([TEXT.read_text()], words, 64, 0, 1, datasets=["passkey"])
    with pytest.raises(DataError, match="no sentences|only"):
        mini_lc.build_mini_lc(["too short"], words, 64, 0, 1)
    with pytest.raises(OLHError, match=r"training length is unknown; pass --metadata l_train"):
        mini_lc.load_mini_rows("mini_passkey", {"texts": str(TEXT)})
    with pytest.raises(DataError, match="texts=/nonexistent.txt does not exist"):
        mini_lc.load_mini_rows("mini_passkey", {"l_train": 64, "texts": "/nonexistent.txt"})
    with pytest.raises(OLHError, match="cannot load tokenizer '/x.model'"):
        mini_lc.load_mini_rows("mini_passkey", {"l_train": 64, "texts": str(TEXT), "mini_lc_tokenizer": "/x.model"})
    with pytest.raises(OLHError, match="unknown metadata key.*mini_lc_nn"):
        mini_lc.load_mini_rows("mini_passkey", {"l_train": 64, "texts": str(TEXT), "mini_lc_nn": 3})


def test_sentencepiece_lengths(tmp_path):
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(
        input=str(TEXT), model_prefix=str(tmp_path / "tok"), vocab_size=300, model_type="bpe",
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    model = tmp_path / "tok.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    rows, desc, l_train = mini_lc.load_mini_rows(
        "mini_passage_count", {"l_train": 128, "texts": str(TEXT), "mini_lc_n": 2, "mini_lc_tokenizer": str(model)}
    )
    assert l_train == 128 and "sentencepiece" in desc and len(rows) == 8
    for r in rows:
        assert r["length"] == len(sp.encode(mini_lc.render_prompt("mini_passage_count", r)))
        assert mini_lc.length_bucket(r["length"], 128) == r["_id"].split("-")[1]
    # a run directory given as the model's ``pretrained`` supplies its tokenizer.model
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tokenizer.model").write_bytes(model.read_bytes())
    base = {"l_train": 128, "texts": str(TEXT), "mini_lc_n": 2}
    _, desc2, _ = mini_lc.load_mini_rows("mini_passage_count", {**base, "pretrained": str(tmp_path / "run")})
    assert "sentencepiece" in desc2
    # the sentencepiece file given as ``tokenizer`` (the key the other olharness tasks read)
    rows3, desc3, _ = mini_lc.load_mini_rows("mini_passage_count", {**base, "tokenizer": str(model)})
    assert "whitespace" not in desc3 and rows3 == rows
    # nothing given: whitespace words
    _, desc4, _ = mini_lc.load_mini_rows("mini_passage_count", base)
    assert "whitespace" in desc4


def test_default_texts_are_the_heldout_corpus(monkeypatch):
    import trainer.data

    class FakeCorpus:
        heldout = [TEXT.read_text()]
        heldout_names = ["Persuasion"]

    calls = []
    monkeypatch.setattr(trainer.data, "load_corpus", lambda spec: calls.append(spec) or FakeCorpus())
    assert load_texts({}, "t") == [("Persuasion", FakeCorpus.heldout[0])] and calls == ["austen"]
    load_texts({"texts": "corpus:/some/path"}, "t")
    assert calls[-1] == "/some/path"


# ------------------------------------------------------------------------------------ lm-eval e2e
def _oracle(prompt: str) -> str:
    if "The excerpt is from Paragraph" in prompt:
        excerpt = re.search(r"\nExcerpt: (.*)\nThe excerpt is from Paragraph$", prompt).group(1)
        for n, text in re.findall(r"Paragraph (\d+): ([^\n]*)", prompt):
            if excerpt in text:
                return f" {n}"
    if prompt.endswith("The number of different paragraphs is"):
        distinct = set(re.findall(r"Paragraph \d+: ([^\n]*)", prompt))
        return f" {len(distinct)}."
    m = re.search(r"The pass key is (\d+)\. Remember it", prompt)
    return f" {m.group(1)}. Remember it."


def _make_lm(answer):
    from lm_eval.api.model import LM

    class _LM(LM):
        def __init__(self):
            super().__init__()
            self.kwargs = []

        def generate_until(self, requests, disable_tqdm: bool = False):
            self.kwargs += [r.args[1] for r in requests]
            return [answer(r.args[0]) for r in requests]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

    return _LM()


def _evaluate(lm, **metadata):
    import lm_eval
    from lm_eval.tasks import TaskManager

    md = {"l_train": 64, "texts": str(TEXT), "mini_lc_n": 2, **metadata}
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=md)
    return lm_eval.simple_evaluate(model=lm, tasks=["olh_mini_lc"], task_manager=tm, bootstrap_iters=0, log_samples=False)


def test_e2e_oracle_scores_100_everywhere():
    lm = _make_lm(_oracle)
    out = _evaluate(lm)
    res = out["results"]
    for name in ("olh_mini_lc", "olh_mini_lc_passage_retrieval", "olh_mini_lc_passage_count", "olh_mini_lc_passkey"):
        for metric in ("score", "score_1x", "score_2x", "score_4x", "score_8x"):
            assert res[name][f"{metric},none"] == 100.0, (name, metric)
    assert len(lm.kwargs) == 3 * 4 * 2
    assert {k["max_gen_toks"] for k in lm.kwargs} == {8, 16} and all(k["until"] == ["\n"] for k in lm.kwargs)


def test_e2e_constant_answer_matches_direct_scoring():
    from olharness.longbench.metrics import count_score, retrieval_score

    out = _evaluate(_make_lm(lambda prompt: " 1"))
    res = out["results"]
    per_task = {}
    for d in mini_lc.MINI_DATASETS:
        rows = mini_lc.build_mini_lc([TEXT.read_text()], words, 64, 0, 2, datasets=[d])
        metric = retrieval_score if d == "mini_passage_retrieval" else count_score
        scores = [metric(" 1", r["answers"][0]) for r in rows]
        task = "olh_mini_lc_" + d.removeprefix("mini_")
        assert res[task]["score,none"] == pytest.approx(100 * sum(scores) / len(scores))
        per_task[task] = res[task]["score,none"]
        for m in mini_lc.BUCKETS:
            in_bucket = [s for r, s in zip(rows, scores) if r["_id"].split("-")[1] == m]
            assert len(in_bucket) == 2
            assert res[task][f"score_{m},none"] == pytest.approx(100 * sum(in_bucket) / 2)
    assert res["olh_mini_lc"]["score,none"] == pytest.approx(sum(per_task.values()) / 3)
    assert res["olh_mini_lc_passkey"]["score,none"] == 0.0


def test_paragraph_sizes_are_bounded():
    sentences = mini_lc.split_sentences([TEXT.read_text()])
    assert sentences and all("\n" not in s for s in sentences)
    for para_tokens in (8, 16, 64):
        pieces = mini_lc.split_pieces(sentences, words, para_tokens)
        assert all(n <= 2 * para_tokens for _, n in pieces)
        paras = mini_lc.make_paragraphs(pieces, para_tokens)
        sizes = [words(p) for p in paras]
        assert len(paras) == len(set(paras)) > 10
        assert min(sizes) >= para_tokens // 2 and max(sizes) <= 2 * para_tokens


def test_run_dir_gives_l_train_and_tokenizer(tmp_path):
    """Same metadata conventions as the other olharness tasks: ``run_dir`` (or the ``ol`` model's
    ``pretrained``) names one of our runs, whose config gives l_train and whose tokenizer counts."""
    import sentencepiece as spm
    import json

    ck = tmp_path / "run" / "checkpoint"
    ck.mkdir(parents=True)
    spm.SentencePieceTrainer.train(
        input=str(TEXT), model_prefix=str(ck / "tokenizer"), vocab_size=400, model_type="bpe",
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    (ck / "config.json").write_text(json.dumps({"data": {"seq_len": 128}}))
    (ck / "model.safetensors").write_bytes(b"")
    sp = spm.SentencePieceProcessor(model_file=str(ck / "tokenizer.model"))
    for key in ("run_dir", "pretrained"):
        rows, desc, l_train = mini_lc.load_mini_rows(
            "mini_passkey", {key: str(tmp_path / "run"), "texts": str(TEXT), "mini_lc_n": 1}
        )
        assert l_train == 128 and "whitespace" not in desc
        assert [r["length"] for r in rows] == [len(sp.encode(mini_lc.render_prompt("mini_passkey", r))) for r in rows]
