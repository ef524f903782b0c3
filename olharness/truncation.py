"""Middle truncation of over-long prompts, the way THUDM's LongBench ``pred.py`` does it.

LongBench keeps the start of a prompt (the instructions and the beginning of the document) and its
end (the question and the answer cue), and drops the middle::

    half = int(max_length / 2)
    prompt = decode(ids[:half]) + decode(ids[-half:])

We do the same on token ids, without the decode/re-encode round trip: the model sees exactly the
first ``budget // 2`` and the last ``budget // 2`` ids of the prompt. Model adapters (``ol``,
``hf-mid``) call :func:`middle_truncate` on the encoded prompt before generating.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["middle_truncate"]


def middle_truncate(ids: Sequence[int], budget: int) -> list[int]:
    """Return ``ids`` unchanged (as a list) if ``len(ids) <= budget``; otherwise the first
    ``budget // 2`` ids followed by the last ``budget // 2`` ids.

    An odd budget therefore keeps ``budget - 1`` ids, as THUDM's ``half = int(max_length / 2)``
    does. Unlike the Python slice ``ids[-0:]`` (which is the whole list), a budget of 0 or 1 never
    silently keeps everything: it raises, because a prompt needing truncation to fewer than two
    tokens is a configuration error (e.g. ``max_gen_toks`` >= the model's context length).

    Raises ``ValueError`` for a negative budget, or for a budget below 2 when truncation is needed.
    """
    budget = int(budget)
    if budget < 0:
        raise ValueError(f"middle_truncate: budget must be >= 0, got {budget}")
    ids = list(ids)
    if len(ids) <= budget:
        return ids
    half = budget // 2
    if half == 0:
        raise ValueError(
            f"middle_truncate: a prompt of {len(ids)} tokens cannot be truncated to a budget of "
            f"{budget} (need at least 2 tokens); check max_length and max_gen_toks"
        )
    return ids[:half] + ids[-half:]
