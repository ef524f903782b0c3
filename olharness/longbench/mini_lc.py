"""olh mini long-context suite: LongBench-style tasks sized for small models trained on our corpus.

Our own suite, not LongBench: LongBench's row schema and metric code, our prompts, rows generated
(seeded) from held-out text at prompt lengths of 1x, 2x, 4x and 8x ``l_train`` (a row of bucket
``Mx`` has ``M/2 * l_train < length <= M * l_train``). Datasets, prompts, answers, chance levels and
the likelihood-scored multiple-choice twin: tasks/mini_lc/README.md."""
from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from olharness import task_common as tc
from olharness.longbench.loading import DataError
from olharness.longbench.metrics import count_score, retrieval_score

log = logging.getLogger(__name__)

MINI_DATASETS: tuple[str, ...] = ("mini_passage_retrieval", "mini_passage_count", "mini_passkey")
MULTIPLES: tuple[int, ...] = (1, 2, 4, 8)
BUCKETS: tuple[str, ...] = tuple(f"{m}x" for m in MULTIPLES)

PROMPTS: dict[str, str] = {
    "mini_passage_retrieval": ("Below are numbered paragraphs and an excerpt from one of them.\n\n{context}\n\n"
                               "Excerpt: {input}\nThe excerpt is from Paragraph"),
    "mini_passage_count": ("Below are numbered paragraphs; some are repeated.\n\n{context}\n\n"
                           "The number of different paragraphs is"),
    "mini_passkey": "Remember the pass key hidden in this text.\n\n{context}\n\n{input} The pass key is",
}
METRICS: dict[str, Callable[..., float]] = {"mini_passage_retrieval": retrieval_score,
                                            "mini_passage_count": count_score, "mini_passkey": count_score}
MAX_GEN: dict[str, int] = {"mini_passage_retrieval": 8, "mini_passage_count": 8, "mini_passkey": 16}
STOP_STRINGS: dict[str, list[str]] = {d: ["\n"] for d in MINI_DATASETS}
PASSKEY_QUESTION = "What is the pass key?"
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
MIN_BLOCK_WORDS = 8


def generation_kwargs(dataset: str) -> dict:
    return {"until": list(STOP_STRINGS[dataset]), "max_gen_toks": MAX_GEN[dataset], "do_sample": False,
            "temperature": 0.0}


def render_prompt(dataset: str, row: dict) -> str:
    return PROMPTS[dataset].format(**row)


def render_prompt_without_context(dataset: str, row: dict) -> str:
    """The prompt with an empty ``context`` (the question without the evidence): the baseline of
    the multiple-choice twin's calibrated accuracy."""
    return PROMPTS[dataset].format(context="", input=row["input"])


def length_bucket(length: int, l_train: int) -> str:
    """Smallest ``Mx`` (M in 1, 2, 4, 8) with ``length <= M * l_train``."""
    for m in MULTIPLES:
        if length <= m * l_train:
            return f"{m}x"
    raise ValueError(f"length {length} exceeds {MULTIPLES[-1]} x l_train = {MULTIPLES[-1] * l_train}")


# ------------------------------------------------------------------------------------ text pools
def split_sentences(texts: Sequence[str]) -> list[str]:
    """Blank-line separated blocks of at least ``MIN_BLOCK_WORDS`` words (headings dropped), line
    breaks folded to spaces, cut into sentences after ``.``, ``!`` or ``?``."""
    sentences: list[str] = []
    for doc in texts:
        for block in re.split(r"\n\s*\n", doc.replace("\r\n", "\n")):
            words = block.split()
            if len(words) < MIN_BLOCK_WORDS:
                continue
            sentences.extend(s for s in re.split(r"(?<=[.!?])\s+", " ".join(words)) if s)
    return sentences


def split_pieces(sentences: Sequence[str], count_tokens: Callable[[str], int], para_tokens: int
                 ) -> list[tuple[str, int]]:
    """``(text, tokens)`` per sentence; a sentence longer than ``2 * para_tokens`` tokens is cut
    into word chunks of about ``para_tokens`` tokens."""
    pieces: list[tuple[str, int]] = []
    for s in sentences:
        n = count_tokens(s)
        if n <= 2 * para_tokens:
            pieces.append((s, n))
            continue
        words = s.split()
        k = -(-n // para_tokens)  # number of chunks
        step = -(-len(words) // k)
        for i in range(0, len(words), step):
            chunk = " ".join(words[i : i + step])
            pieces.append((chunk, count_tokens(chunk)))
    return pieces


def make_paragraphs(pieces: Sequence[tuple[str, int]], para_tokens: int) -> list[str]:
    """Group consecutive pieces into paragraphs of about ``para_tokens`` to ``2 * para_tokens`` tokens (a group shorter
    than ``para_tokens // 2`` that cannot grow is dropped, as are the last remainder and duplicates); order is kept."""
    out, seen, cur, total = [], set(), [], 0

    def emit():
        para = " ".join(cur)
        if para not in seen:
            seen.add(para)
            out.append(para)

    for s, n in pieces:
        if cur and total + n > 2 * para_tokens:
            if total >= para_tokens // 2:
                emit()
            cur, total = [], 0
        cur.append(s)
        total += n
        if total >= para_tokens:
            emit()
            cur, total = [], 0
    return out


class _Pool:
    def __init__(self, texts: Sequence[str], count_tokens: Callable[[str], int], l_train: int, para_tokens: int | None):
        self.count = count_tokens
        sentences = split_sentences(texts)
        if not sentences:
            raise DataError("mini_lc: the source texts contain no sentences")
        self.para_tokens = para_tokens or max(8, l_train // 8)
        self.excerpt_words = max(4, min(12, l_train // 16))
        self.pieces = split_pieces(sentences, count_tokens, self.para_tokens)
        self.paragraphs = make_paragraphs(self.pieces, self.para_tokens)
        self.para_len = [count_tokens(p) for p in self.paragraphs]
        self.by_length = sorted(range(len(self.paragraphs)), key=lambda i: (self.para_len[i], i))
        if len(self.paragraphs) < 4:
            raise DataError(f"mini_lc: the source texts give only {len(self.paragraphs)} paragraphs of "
                            f"{self.para_tokens} tokens; give more text (metadata 'texts')")


# ------------------------------------------------------------------------------------ row makers
def _fit(render: Callable[[], tuple[str, dict]], shrink: Callable[[], bool], count_tokens, limit: int):
    """Render, and shrink until the prompt has at most ``limit`` tokens."""
    while True:
        prompt, row = render()
        n = count_tokens(prompt)
        if n <= limit:
            return row, n
        if not shrink():
            raise DataError(f"mini_lc: cannot fit a prompt into {limit} tokens; l_train is too small")


def _numbered(paras: Sequence[str]) -> str:
    return "\n\n".join(f"Paragraph {i + 1}: {p}" for i, p in enumerate(paras))


def _greedy_paragraphs(pool: _Pool, rng: random.Random, budget: int, sep: int) -> list[int]:
    order = list(range(len(pool.paragraphs)))
    rng.shuffle(order)
    chosen, used = [], 0
    for idx in order:
        cost = pool.para_len[idx] + sep
        if used + cost > budget:
            continue  # look for a shorter paragraph that still fits
        chosen.append(idx)
        used += cost
    if len(chosen) < 2:
        raise DataError(f"mini_lc: only {len(chosen)} paragraph(s) of ~{pool.para_tokens} tokens fit in the {budget} "
                        "tokens the prompt template leaves; use a larger l_train or a smaller mini_lc_para_tokens")
    return chosen


def _overhead(dataset: str, count_tokens, inp: str = "") -> int:
    return count_tokens(PROMPTS[dataset].format(context="", input=inp))


def _row_retrieval(pool: _Pool, rng: random.Random, limit: int) -> tuple[dict, int]:
    ds = "mini_passage_retrieval"
    sep = pool.count("Paragraph 10:") + 1
    budget = limit - _overhead(ds, pool.count, " ".join(["word"] * pool.excerpt_words))
    idxs = _greedy_paragraphs(pool, rng, budget, sep)
    state = {}

    def pick():
        paras = [pool.paragraphs[i] for i in idxs]
        for _ in range(100):
            j = rng.randrange(len(paras))
            words = paras[j].split()
            k = min(pool.excerpt_words, max(3, len(words) // 2))
            start = rng.randrange(0, len(words) - k + 1)
            excerpt = " ".join(words[start : start + k])
            if sum(excerpt in p for p in paras) == 1:
                state.update(j=j, excerpt=excerpt, paras=paras)
                return
        raise DataError("mini_lc: could not find an excerpt unique to one paragraph")

    def render():
        if state.get("n") != len(idxs):
            pick()
            state["n"] = len(idxs)
        row = {"input": state["excerpt"], "context": _numbered(state["paras"]),
               "answers": [f"Paragraph {state['j'] + 1}"]}
        return render_prompt(ds, row), row

    def shrink():  # drop the longest paragraph (the answer is re-drawn); at two, swap in a shorter one
        longest = max(reversed(idxs), key=lambda i: pool.para_len[i])
        if len(idxs) > 2:
            idxs.remove(longest)
            return True
        shorter = [i for i in pool.by_length if pool.para_len[i] < pool.para_len[longest] and i not in idxs]
        if not shorter:
            return False
        idxs[idxs.index(longest)] = shorter[0]
        state.pop("n", None)  # re-pick the excerpt among the new paragraphs
        return True

    return _fit(render, shrink, pool.count, limit)


def _row_count(pool: _Pool, rng: random.Random, limit: int) -> tuple[dict, int]:
    ds = "mini_passage_count"
    sep, budget = pool.count("Paragraph 10:") + 1, limit - _overhead(ds, pool.count)
    idxs = _greedy_paragraphs(pool, rng, budget, sep)
    n_slots = len(idxs)
    # Repeats change the length; re-draw a few times (seeded) before shrinking.
    for _ in range(10):
        n_unique = rng.randint(max(1, n_slots // 2), n_slots)
        uniques = idxs[:n_unique]
        slots = uniques + [rng.choice(uniques) for _ in range(n_slots - n_unique)]
        rng.shuffle(slots)
        if sum(pool.para_len[i] + sep for i in slots) <= budget:
            break

    def render():
        row = {"input": "", "context": _numbered([pool.paragraphs[i] for i in slots]),
               "answers": [str(len(set(slots)))]}
        return render_prompt(ds, row), row

    def shrink():  # drop the longest slot; the answer is recounted
        if len(slots) <= 2:
            return False
        longest = max(range(len(slots)), key=lambda k: (pool.para_len[slots[k]], k))
        slots.pop(longest)
        return True

    return _fit(render, shrink, pool.count, limit)


def _row_passkey(pool: _Pool, rng: random.Random, limit: int) -> tuple[dict, int]:
    ds = "mini_passkey"
    key = rng.randint(10000, 99999)
    needle = NEEDLE.format(key=key)
    budget = limit - _overhead(ds, pool.count, PASSKEY_QUESTION) - pool.count(needle) - 1
    n_pieces = len(pool.pieces)
    start = rng.randrange(n_pieces)
    sents, used = [], 0
    for step in range(n_pieces):
        i = (start + step) % n_pieces
        cost = pool.pieces[i][1] + 1
        if used + cost > budget:
            break
        sents.append(i)
        used += cost
    depth = rng.random()

    def render():
        filler = [pool.pieces[i][0] for i in sents]
        pos = round(depth * len(filler))
        context = " ".join(filler[:pos] + [needle] + filler[pos:])
        row = {"input": PASSKEY_QUESTION, "context": context, "answers": [str(key)]}
        return render_prompt(ds, row), row

    def shrink():
        if not sents:
            return False
        sents.pop()
        return True

    return _fit(render, shrink, pool.count, limit)


_MAKERS = {"mini_passage_retrieval": _row_retrieval, "mini_passage_count": _row_count, "mini_passkey": _row_passkey}


def build_mini_lc(texts: Sequence[str], count_tokens: Callable[[str], int], l_train: int, seed: int, n_per_bucket: int,
                  datasets: Sequence[str] = MINI_DATASETS, para_tokens: int | None = None) -> list[dict]:
    """One row in LongBench's schema (``length`` = prompt tokens) per dataset, index and bucket, in that order,
    each drawn from its own ``random.Random(f"{seed}:{dataset}:{M}x:{i}")``."""
    l_train = int(l_train)
    if l_train < 64:
        raise DataError(f"mini_lc: l_train must be >= 64 tokens (the prompts need room), got {l_train}")
    if n_per_bucket < 1:
        raise DataError(f"mini_lc: n_per_bucket must be >= 1, got {n_per_bucket}")
    for d in datasets:
        if d not in _MAKERS:
            raise DataError(f"mini_lc: unknown dataset {d!r}; known: {', '.join(MINI_DATASETS)}")
    pool = _Pool(texts, count_tokens, l_train, para_tokens)
    rows = []
    for d in datasets:
        # index-major, bucket-minor: ``--limit 8`` still samples every bucket
        for i in range(n_per_bucket):
            for m in MULTIPLES:
                limit = m * l_train
                row, n = _MAKERS[d](pool, random.Random(f"{seed}:{d}:{m}x:{i}"), limit)
                if m > 1 and n <= limit // 2:
                    raise DataError(f"mini_lc: {d} row for {m}x has only {n} tokens (<= {limit // 2}); paragraphs "
                                    "too long for l_train, lower para_tokens")
                rows.append({**row, "length": n, "dataset": d, "language": "en", "all_classes": None,
                             "_id": f"{d}-{m}x-{i:03d}"})
    return rows


# ------------------------------------------------------------------------- metadata-driven loading
def mini_seed(metadata: dict | None) -> int:
    """The suite's seed: ``mini_lc_seed``, else ``seed``, else 0 (the seed of the published tables)."""
    md = metadata or {}
    return tc._int({"seed": md.get("mini_lc_seed", md.get("seed"))}, "seed", 0, minimum=0)


def _counter(metadata: dict, task: str) -> tuple[Callable[[str], int], str]:
    """Token counter: the reference tokenizer named by ``mini_lc_tokenizer``, else by ``tokenizer`` /
    ``run_dir`` / ``pretrained`` (``olharness.task_common.resolve_tokenizer``), else whitespace words."""
    if metadata.get("mini_lc_tokenizer"):
        tok = tc.RefTokenizer(metadata["mini_lc_tokenizer"], tc.trusts_remote_code(metadata))
    elif any(metadata.get(k) for k in ("tokenizer", "run_dir", "pretrained")):
        tok = tc.resolve_tokenizer(metadata, task)
    else:
        log.warning("%s: no tokenizer given; lengths are WHITESPACE WORDS, not model tokens", task)
        return (lambda s: len(s.split())), "whitespace-words"
    return (lambda s: len(tok.encode(s))), f"reference tokenizer {tok.spec} ({tok.kind})"


@lru_cache(maxsize=8)
def _cached_rows(md_items: tuple, l_train: int, seed: int, n: int, dataset: str, para: int | None):
    md, task = dict(md_items), "olh_mini_lc"
    count, tok_desc = _counter(md, task)
    docs = tc.load_texts(md, task)
    rows = build_mini_lc([t for _, t in docs], count, l_train, seed, n, datasets=(dataset,), para_tokens=para)
    return rows, (f"texts={md.get('texts') or 'held-out Austen'} ({len(docs)} documents); tokens={tok_desc}; "
                  f"l_train={l_train}; seed={seed}; n_per_bucket={n}")


def load_mini_rows(dataset: str, metadata: dict | None) -> tuple[list[dict], str, int]:
    """``(rows, description, l_train)`` of one mini dataset. Besides task_common's metadata: ``mini_lc_l_train``
    (lets a grid score LSM/PPL at one length and this suite at another), ``mini_lc_tokenizer``,
    ``mini_lc_seed`` (else ``seed``, else 0), ``mini_lc_n`` (rows per bucket, 20), ``mini_lc_para_tokens``."""
    task = "olh_mini_lc"
    md = tc.check_metadata(metadata, task)
    l_train = tc._int(md, "mini_lc_l_train") or tc.resolve_l_train(md, task)
    n, para = tc._int(md, "mini_lc_n", 20), tc._int(md, "mini_lc_para_tokens")
    keys = ("texts", "mini_lc_tokenizer", "tokenizer", "run_dir", "pretrained", "trust_remote_code")
    md_items = tuple((k, str(md[k])) for k in keys if md.get(k) not in (None, ""))
    rows, desc = _cached_rows(md_items, l_train, mini_seed(md), n, dataset, para)
    return [dict(r) for r in rows], desc, l_train
