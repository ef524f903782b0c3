"""LongBench metrics, written from THUDM's definitions (LongBench v1 ``metrics.py``/``eval.py``).

Every function takes ``(prediction, ground_truth, **kwargs)`` and returns a float in [0, 1]; the
row score is the max over the gold answers (:func:`score_row`). Definitions, including the quirks
that exact parity with THUDM's published numbers requires:

``qa_f1_score``
    SQuAD normalisation (lowercase, drop ``string.punctuation``, drop the words a/an/the, collapse
    whitespace), then bag-of-tokens F1. Two empty strings score 0 (not 1 as in SQuAD).
``rouge_score``
    ROUGE-L F of the PyPI package ``rouge`` (``Rouge().get_scores([pred], [gold], avg=True)``), not
    Google's ``rouge-score``. The package splits on ``"."`` into sentences, so a prediction with no
    text between periods raises and scores 0; any exception scores 0. Its LCS back-tracking is
    recursive: a sentence pair longer than about 1000 words together raises ``RecursionError`` in
    THUDM's ``eval.py`` (hence 0). We reproduce that: the call runs with the same recursion headroom
    as in ``eval.py`` (:data:`THUDM_ROUGE_HEADROOM`), whatever our own stack depth.
``classification_score``
    Classes of ``all_classes`` that occur in the prediction; then, iterating over that list while
    removing from it (THUDM's loop, which skips the element after each removal), drop classes that
    are substrings of the gold label but not equal to it; ``1/len(list)`` if the gold label is left
    in the list, else 0.
``count_score``
    Fraction of the integers (``\\d+``) in the prediction that equal the gold count; 0 if none.
``retrieval_score``
    Gold id from ``Paragraph (\\d+)`` in the gold answer; fraction of integers in the prediction
    equal to it; 0 if none.
``code_sim_score``
    After ``lstrip("\\n")``, the first line with none of the characters/strings ``` ` ```, ``#``,
    ``//`` (empty string if every line has one), then ``fuzz.ratio(line, gold) / 100``.

``fuzz.ratio`` is fuzzywuzzy's pure-Python path (``difflib.SequenceMatcher``, autojunk on, result
``int(round(100 * ratio))`` with banker's rounding; 100 when both strings are equal, 0 when one is
empty), which is what THUDM's requirements (``fuzzywuzzy`` without ``python-Levenshtein``) run. We
call ``difflib`` directly so that installing ``python-Levenshtein`` (which changes fuzzywuzzy's
numbers) cannot change ours; ``tests/test_longbench_metrics.py`` checks equality with fuzzywuzzy.
"""

from __future__ import annotations

import difflib
import re
import string
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_INT = re.compile(r"\d+")
_PARAGRAPH_ID = re.compile(r"Paragraph (\d+)")


# ------------------------------------------------------------------------------------------ QA F1
def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (in that
    order, as SQuAD and THUDM do)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _token_f1(pred_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """Token-bag F1 after :func:`normalize_answer`."""
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


# ---------------------------------------------------------------------------------------- ROUGE-L
#: Recursion headroom (frames) available to ``Rouge().get_scores`` when THUDM's ``eval.py`` calls it:
#: the default limit 1000 minus the frames of ``<module>`` -> ``scorer_e`` -> ``rouge_score``, as
#: measured on CPython 3.11 by ``tests/test_longbench_metrics.py::test_rouge_headroom_constant``.
THUDM_ROUGE_HEADROOM = 996
_rouge_lock = threading.Lock()
_rouge = None


def _probe_headroom(n: int = 0) -> int:
    """Number of further nested Python calls possible from the caller's depth."""
    try:
        return _probe_headroom(n + 1)
    except RecursionError:
        return n


def _get_rouge():
    global _rouge
    if _rouge is None:
        from rouge import Rouge

        # Only ROUGE-L is read. ROUGE-1/2 (also computed by THUDM's default ``Rouge()``) raise
        # exactly when ROUGE-L does (empty hypothesis or reference), so skipping them changes nothing.
        _rouge = Rouge(metrics=["rouge-l"])
    return _rouge


def rouge_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """ROUGE-L F1 of the ``rouge`` package; 0.0 when it raises (see module docstring)."""
    rouge = _get_rouge()
    with _rouge_lock:
        old_limit = sys.getrecursionlimit()
        # ``_probe_headroom`` starts one frame below this one, like ``get_scores`` below.
        here = _probe_headroom()
        sys.setrecursionlimit(max(old_limit + THUDM_ROUGE_HEADROOM - here, 50))
        try:
            scores = rouge.get_scores([prediction], [ground_truth], avg=True)
        except Exception:  # THUDM: bare ``except: return 0.0``; RecursionError included
            return 0.0
        finally:
            sys.setrecursionlimit(old_limit)
    return float(scores["rouge-l"]["f"])


# --------------------------------------------------------------------------------- classification
def classification_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """THUDM's classification score, including its remove-while-iterating loop."""
    all_classes = kwargs["all_classes"]
    matches = [name for name in all_classes if name in prediction]
    # Deliberately iterate over the list being modified: after a removal the next element is
    # skipped, exactly as in THUDM's loop. Do not "fix" this; it changes published numbers.
    for term in matches:
        if term in ground_truth and term != ground_truth:
            matches.remove(term)
    if ground_truth in matches:
        return 1.0 / len(matches)
    return 0.0


# ------------------------------------------------------------------------------ count, retrieval
def _fraction_equal(prediction: str, target: str) -> float:
    numbers = _INT.findall(prediction)
    if not numbers:
        return 0.0
    return sum(1 for n in numbers if n == target) / len(numbers)


def count_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """Fraction of the integers in ``prediction`` equal to the gold count."""
    return _fraction_equal(prediction, str(ground_truth))


def retrieval_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """Fraction of the integers in ``prediction`` equal to the id in ``Paragraph <id>``."""
    found = _PARAGRAPH_ID.findall(ground_truth)
    if not found:
        raise ValueError(f"retrieval gold answer {ground_truth!r} has no 'Paragraph <number>'")
    return _fraction_equal(prediction, found[0])


# ------------------------------------------------------------------------------------------- code
def fuzz_ratio(s1: str, s2: str) -> int:
    """fuzzywuzzy 0.18 ``fuzz.ratio`` on its pure-Python (difflib) backend."""
    if s1 is None or s2 is None:
        return 0
    if s1 == s2:
        return 100
    if len(s1) == 0 or len(s2) == 0:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, s1, s2).ratio()))


def first_code_line(prediction: str) -> str:
    """First line (after stripping leading newlines) without a backtick, ``#`` or ``//``."""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def code_sim_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """Edit similarity of the first code line of the prediction with the gold next line."""
    return fuzz_ratio(first_code_line(prediction), ground_truth) / 100


# ----------------------------------------------------------------------------------- per dataset
DATASET2METRIC: dict[str, Callable[..., float]] = {
    "qasper": qa_f1_score,
    "multifieldqa_en": qa_f1_score,
    "hotpotqa": qa_f1_score,
    "2wikimqa": qa_f1_score,
    "gov_report": rouge_score,
    "multi_news": rouge_score,
    "trec": classification_score,
    "triviaqa": qa_f1_score,
    "samsum": rouge_score,
    "passage_count": count_score,
    "passage_retrieval_en": retrieval_score,
    "lcc": code_sim_score,
    "repobench-p": code_sim_score,
}
"""Metric of each LongBench-E dataset (base names, without ``_e``)."""

#: datasets whose prediction is cut to its first line before scoring (THUDM also lists ``lsht``).
FIRST_LINE_DATASETS = frozenset({"trec", "triviaqa", "samsum"})


def first_line(prediction: str) -> str:
    """``prediction.lstrip('\\n').split('\\n')[0]``."""
    return prediction.lstrip("\n").split("\n")[0]


def score_row(
    metric: Callable[..., float],
    prediction: str,
    answers: Iterable[str],
    all_classes: Sequence[str] | None = None,
    first_line_only: bool = False,
) -> float:
    """One row's score: optional first-line cut, then the max of ``metric`` over the gold answers
    (starting from 0.0, as THUDM does)."""
    if first_line_only:
        prediction = first_line(prediction)
    score = 0.0
    for gold in answers:
        score = max(score, metric(prediction, gold, all_classes=all_classes))
    return float(score)
