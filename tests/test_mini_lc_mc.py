"""The likelihood-scored multiple-choice twin of the olh mini long-context suite (``olh_mini_lc_mc``)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from olharness.longbench import mini_lc
from olharness.longbench.task import MC_K, mc_choices
from tests.conftest_olh import olh_offline_env  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "tests" / "assets" / "longbench" / "mini_lc_text.txt"  # Persuasion, ch. 1-3 (public domain)
TASKS_DIR = REPO / "tasks" / "mini_lc"
TASKS = {d: "olh_mini_lc_mc_" + d.removeprefix("mini_") for d in mini_lc.MINI_DATASETS}
METRICS = tuple(f"{a}{sfx}" for a in ("acc", "acc_calib") for sfx in ("", *(f"_{b}" for b in mini_lc.BUCKETS)))
N = 2  # rows per bucket in the end-to-end runs


def words(s: str) -> int:
    return len(s.split())


def _rows(n=3, seed=0, datasets=mini_lc.MINI_DATASETS):
    return mini_lc.build_mini_lc([TEXT.read_text()], words, 64, seed, n, datasets=datasets)


@pytest.fixture(scope="module")
def rows():
    return _rows()


def _labels(row) -> list[int]:
    return [int(x) for x in re.findall(r"(?:^|\n\n)Paragraph (\d+): ", row["context"])]


def test_choices_hold_the_answer_exactly_once(rows):
    for r in rows:
        choices, gold = mc_choices(r, seed=0)
        assert all(re.fullmatch(r" [1-9]\d*", c) for c in choices), choices
        assert len(set(choices)) == len(choices) and 0 <= gold < len(choices)
        assert choices[gold].strip() == r["answers"][0].split()[-1]  # "Paragraph 3" -> "3"
        assert [c.strip() for c in choices].count(r["answers"][0].split()[-1]) == 1
        values = sorted(int(c) for c in choices)
        if r["dataset"] == "mini_passage_retrieval":
            labels = _labels(r)
            assert len(choices) == min(MC_K, len(labels)) >= 2
            assert set(values) <= set(labels)
        elif r["dataset"] == "mini_passage_count":
            assert len(choices) == MC_K and values == list(range(values[0], values[0] + 4))
            assert values[0] >= 1
        else:
            key = r["answers"][0]
            assert len(choices) == MC_K and all(len(c.strip()) == 5 for c in choices)
            prompt = mini_lc.render_prompt(r["dataset"], r)
            others = [c.strip() for i, c in enumerate(choices) if i != gold]
            assert not any(o in prompt for o in others)
            near = [o for o in others if sum(a != b for a, b in zip(o, key)) == 1]
            assert len(near) >= 1  # the near miss (a random key may happen to be one too)


def test_choices_are_deterministic_and_seeded(rows):
    first = [mc_choices(r, seed=0) for r in rows]
    assert first == [mc_choices(r, seed=0) for r in _rows()]
    assert first != [mc_choices(r, seed=1) for r in rows]
    # the gold answer is not always at the same position
    golds = [g for _, g in first]
    assert len(set(golds)) > 1


# ------------------------------------------------------------------------------------ lm-eval e2e
def _answer(prompt: str) -> str | None:
    """The right answer, read from the prompt alone (None for a prompt without context)."""
    if "\n\n\n\n" in prompt:  # the prompt with an empty context, for acc_calib
        return None
    if prompt.endswith("The excerpt is from Paragraph"):
        excerpt = re.search(r"\nExcerpt: (.*)\nThe excerpt is from Paragraph$", prompt).group(1)
        hits = [n for n, text in re.findall(r"Paragraph (\d+): ([^\n]*)", prompt) if excerpt in text]
        assert len(hits) == 1
        return hits[0]
    if prompt.endswith("The number of different paragraphs is"):
        return str(len(set(re.findall(r"Paragraph \d+: ([^\n]*)", prompt))))
    assert prompt.endswith("What is the pass key? The pass key is")
    return re.search(r"The pass key is (\d{5})\. Remember it", prompt).group(1)


def _make_lm(score):
    """A deterministic loglikelihood-only LM: ``score(context, continuation, choice_index)``."""
    from lm_eval.api.model import LM

    class _LM(LM):
        def __init__(self):
            super().__init__()
            self.requests = []

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self.requests += [(*r.args, r.idx) for r in requests]
            return [(float(score(*r.args, r.idx)), False) for r in requests]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

    return _LM()


def _evaluate(lm, tasks=("olh_mini_lc_mc",), **metadata):
    import lm_eval
    from lm_eval.tasks import TaskManager

    md = {"l_train": 64, "texts": str(TEXT), "mini_lc_n": N, **metadata}
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=md)
    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=tm, bootstrap_iters=0, log_samples=False)


def test_e2e_correct_answer_lm_scores_1():
    def score(ctx, cont, i):  # the right answer is likelier; without context all choices are equal
        answer = _answer(ctx)
        return -5.0 if answer is None else 0.0 if cont == " " + answer else -1.0

    lm = _make_lm(score)
    res = _evaluate(lm)["results"]
    for name in ("olh_mini_lc_mc", *TASKS.values()):
        for metric in METRICS:
            assert res[name][f"{metric},none"] == 1.0, (name, metric)
        assert 0 < res[name]["chance,none"] <= 0.5
    assert res["olh_mini_lc_mc_passage_count"]["chance,none"] == 0.25
    assert res["olh_mini_lc_mc_passkey"]["chance,none"] == 0.25
    # the prompts are exactly the generation suite's; every continuation starts with a space
    rows = _rows(n=N)
    prompts = {mini_lc.render_prompt(r["dataset"], r) for r in rows}
    empty = {mini_lc.render_prompt_without_context(r["dataset"], r) for r in rows}
    assert {ctx for ctx, _, _ in lm.requests} == prompts | empty
    assert all(cont.startswith(" ") and not cont.startswith("  ") for _, cont, _ in lm.requests)
    assert len(lm.requests) == 2 * sum(len(mc_choices(r, 0)[0]) for r in rows)


def test_e2e_first_choice_lm_matches_hand_count():
    res = _evaluate(_make_lm(lambda ctx, cont, i: -float(i)))["results"]
    accs, chances = {}, {}
    for d, task in TASKS.items():
        rows = _rows(n=N, datasets=[d])
        mc = [mc_choices(r, 0) for r in rows]
        hits = [float(g == 0) for _, g in mc]
        accs[task] = sum(hits) / len(hits)
        chances[task] = sum(1 / len(c) for c, _ in mc) / len(mc)
        assert res[task]["acc,none"] == pytest.approx(accs[task])
        assert res[task]["chance,none"] == pytest.approx(chances[task])
        # with -idx scores, prompt minus empty-context scores tie: acc_calib also takes the first choice
        assert res[task]["acc_calib,none"] == pytest.approx(accs[task])
        for b in mini_lc.BUCKETS:
            in_bucket = [h for r, h in zip(rows, hits) if r["_id"].split("-")[1] == b]
            assert len(in_bucket) == N
            assert res[task][f"acc_{b},none"] == pytest.approx(sum(in_bucket) / N)
            assert res[task][f"acc_calib_{b},none"] == pytest.approx(sum(in_bucket) / N)
    group = res["olh_mini_lc_mc"]
    assert group["acc,none"] == pytest.approx(sum(accs.values()) / 3)
    assert group["chance,none"] == pytest.approx(sum(chances.values()) / 3)
    for m in METRICS:
        assert group[f"{m},none"] == pytest.approx(sum(res[t][f"{m},none"] for t in TASKS.values()) / 3)


def test_e2e_calibration_cancels_a_context_free_prior():
    """An LM that ignores the context and prefers small numbers: ``acc`` is how often the gold is the
    smallest choice; ``acc_calib`` sees no effect of the context (all ties: the first choice)."""
    res = _evaluate(_make_lm(lambda ctx, cont, i: -float(cont)))["results"]
    for d, task in TASKS.items():
        mc = [mc_choices(r, 0) for r in _rows(n=N, datasets=[d])]
        smallest = [float(int(c[g]) == min(map(int, c))) for c, g in mc]
        assert res[task]["acc,none"] == pytest.approx(sum(smallest) / len(mc))
        assert res[task]["acc_calib,none"] == pytest.approx(sum(g == 0 for _, g in mc) / len(mc))


def test_e2e_ties_go_to_the_first_choice_and_empty_buckets_are_nan():
    # a constant LM ties everywhere: the first choice wins (the same hand count as above)
    res = _evaluate(_make_lm(lambda ctx, cont, i: -1.0), tasks=["olh_mini_lc_mc_passkey"])["results"]
    mc = [mc_choices(r, 0) for r in _rows(n=N, datasets=["mini_passkey"])]
    assert res["olh_mini_lc_mc_passkey"]["acc,none"] == pytest.approx(sum(g == 0 for _, g in mc) / len(mc))
    # --limit 4 keeps the 4 buckets of row 0; --limit 2 leaves 4x and 8x empty -> NaN
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                     metadata={"l_train": 64, "texts": str(TEXT), "mini_lc_n": N})  # fmt: skip
    out = lm_eval.simple_evaluate(model=_make_lm(lambda c, x, i: -float(i)), tasks=["olh_mini_lc_mc"], limit=2,
                                  task_manager=tm, bootstrap_iters=0)  # fmt: skip
    res = out["results"]
    for task in TASKS.values():
        assert not math.isnan(res[task]["acc_1x,none"]) and math.isnan(res[task]["acc_8x,none"])
    assert math.isnan(res["olh_mini_lc_mc"]["acc_4x,none"]) and not math.isnan(res["olh_mini_lc_mc"]["acc,none"])


def test_e2e_with_an_ol_checkpoint(tiny_run):
    """``ol`` scores the choices by loglikelihood (a tiny trained decoder, its own tokenizer counts):
    acc and acc_calib equal the argmax over the choices' loglikelihoods, computed here request by request."""
    from lm_eval.api.instance import Instance

    from olharness.model import OLM

    run = str(tiny_run("decoder"))
    lm = OLM(pretrained=run, device="cpu", batch_size=8, max_length=8 * 128 + 8)
    out = _evaluate(lm, tasks=["olh_mini_lc_mc_passkey"], mini_lc_l_train=128, mini_lc_n=1, pretrained=run)
    res = out["results"]["olh_mini_lc_mc_passkey"]
    rows = mini_lc.load_mini_rows("mini_passkey", {"l_train": 64, "texts": str(TEXT), "mini_lc_n": 1,
                                                    "mini_lc_l_train": 128, "pretrained": run})[0]
    acc, calib = [], []
    for r in rows:
        choices, gold = mc_choices(r, 0)
        lls = []
        for prompt in (mini_lc.render_prompt(r["dataset"], r), mini_lc.render_prompt_without_context(r["dataset"], r)):
            reqs = [Instance("loglikelihood", {}, (prompt, c), 0) for c in choices]
            lls.append([x for x, _ in lm.loglikelihood(reqs, disable_tqdm=True)])
        acc.append(float(max(range(len(choices)), key=lambda i: (lls[0][i], -i)) == gold))
        gain = [a - b for a, b in zip(*lls)]
        calib.append(float(max(range(len(choices)), key=lambda i: (gain[i], -i)) == gold))
    assert len(rows) == 4 and res["chance,none"] == 0.25
    assert res["acc,none"] == pytest.approx(sum(acc) / 4) and res["acc_calib,none"] == pytest.approx(sum(calib) / 4)
    assert [res[f"acc_{b},none"] for b in mini_lc.BUCKETS] == acc  # one row per bucket, in bucket order
    assert "reference tokenizer" in out["configs"]["olh_mini_lc_mc_passkey"]["metadata"]["data_source"]
