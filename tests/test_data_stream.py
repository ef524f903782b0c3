"""Token stream (EOS-joined, cached .npy keyed by tokenizer + texts) and WindowSampler (offline)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.data import Tokenizer, WindowSampler, build_token_stream, load_corpus
from trainer.errors import DataError

FIXTURE = Path(__file__).parent / "assets" / "austen" / "Rdata.rdb"


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(f"austen:{FIXTURE}")


@pytest.fixture(scope="module")
def tok(corpus, tmp_path_factory):
    return Tokenizer.train(corpus.train, tmp_path_factory.mktemp("tok") / "tokenizer.model", 400)


# ---- stream ----------------------------------------------------------------------------------


def test_stream_layout(tok):
    docs = ["First document.", "Second one\nwith two lines.", "Third."]
    s = build_token_stream(docs, tok, progress=False)
    assert s.dtype == np.int32 and s.ndim == 1
    expected = tok.encode(docs[0]) + [tok.eos_id] + tok.encode(docs[1]) + [tok.eos_id] + tok.encode(docs[2])
    assert s.tolist() == expected
    assert (s == tok.eos_id).sum() == 2  # only between documents
    with pytest.raises(DataError, match="empty"):
        build_token_stream([], tok)


def test_cache_hit_and_invalidation(tok, corpus, tmp_path, monkeypatch):
    cache = tmp_path / "c" / "train_tokens.npy"
    first = build_token_stream(corpus.train, tok, cache, progress=False)
    assert cache.is_file() and Path(str(cache) + ".key.json").is_file()
    meta = json.loads(Path(str(cache) + ".key.json").read_text())
    assert meta["n_tokens"] == len(first) and meta["vocab_size"] == 400

    import trainer.data.stream as stream

    calls = []
    real = stream._tokenize
    monkeypatch.setattr(stream, "_tokenize", lambda *a, **k: calls.append(1) or real(*a, **k))

    hit = build_token_stream(corpus.train, tok, cache, progress=False)
    assert calls == [] and np.array_equal(hit, first)  # hit: nothing re-tokenized

    changed = corpus.train[:-1] + [corpus.train[-1] + " One more sentence."]
    miss = build_token_stream(changed, tok, cache, progress=False)
    assert calls == [1] and len(miss) > len(first)  # texts changed: rebuilt

    other_tok = Tokenizer.train(corpus.train, tmp_path / "other.model", 350)
    again = build_token_stream(changed, other_tok, cache, progress=False)
    assert calls == [1, 1] and again.max() < 350  # tokenizer changed: rebuilt

    # a key file that lost its array (or a damaged array) is a miss, not a crash
    again = np.array(again)  # (results are memory maps: copy before damaging the file in place)
    cache.write_bytes(b"garbage")
    rebuilt = build_token_stream(changed, other_tok, cache, progress=False)
    assert calls == [1, 1, 1] and np.array_equal(rebuilt, again)
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]


# ---- sampler ---------------------------------------------------------------------------------


def _stream(n=1000):
    return np.arange(n, dtype=np.int32)


def test_sampler_shapes_and_contiguity():
    s = WindowSampler(_stream(), window=17, batch_size=5, seed=0)
    b = s.next_batch()
    assert b.dtype == torch.long and b.shape == (5, 17)
    assert torch.all(b[:, 1:] - b[:, :-1] == 1)  # contiguous windows of the stream
    assert b.min() >= 0 and b.max() <= 999


def test_sampler_offsets_cover_both_ends():
    s = WindowSampler(_stream(10), window=8, batch_size=64, seed=0)
    offs = set(s.next_batch()[:, 0].tolist())
    assert offs == {0, 1, 2}  # uniform on [0, len - window], both ends included
    exact = WindowSampler(_stream(8), window=8, batch_size=2, seed=0)
    assert exact.next_batch().tolist() == [list(range(8))] * 2


def test_sampler_matches_pcg64_spec():
    s = WindowSampler(_stream(), window=10, batch_size=4, seed=7, rank=3)
    rng = np.random.Generator(np.random.PCG64([7, 3]))
    want = rng.integers(0, 990, size=4, endpoint=True)
    assert s.next_batch()[:, 0].tolist() == want.tolist()


def test_sampler_deterministic_and_ranks_differ():
    a = WindowSampler(_stream(), 16, 4, seed=1)
    b = WindowSampler(_stream(), 16, 4, seed=1)
    r1 = WindowSampler(_stream(), 16, 4, seed=1, rank=1)
    s2 = WindowSampler(_stream(), 16, 4, seed=2)
    xa = [a.next_batch() for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(xa, [b.next_batch() for _ in range(3)]))
    assert not torch.equal(xa[0], r1.next_batch())
    assert not torch.equal(xa[0], s2.next_batch())


def test_sampler_resume_is_bit_identical():
    a = WindowSampler(_stream(), 32, 8, seed=5, rank=2)
    for _ in range(7):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # must survive JSON
    assert state["batches_served"] == 7
    expected = [a.next_batch() for _ in range(5)]

    b = WindowSampler(_stream(), 32, 8, seed=5, rank=2)
    b.load_state_dict(state)
    assert b.batches_served == 7
    assert all(torch.equal(x, y) for x, y in zip(expected, [b.next_batch() for _ in range(5)]))
    assert b.batches_served == 12


def test_sampler_state_mismatch_and_malformed():
    a = WindowSampler(_stream(), 32, 8, seed=5)
    state = a.state_dict()
    with pytest.raises(DataError, match="window=32"):
        WindowSampler(_stream(), 16, 8, seed=5).load_state_dict(state)
    with pytest.raises(DataError, match="n_tokens=1000"):
        WindowSampler(_stream(999), 32, 8, seed=5).load_state_dict(state)
    with pytest.raises(DataError, match="malformed"):
        a.load_state_dict({"batches_served": 1})


def test_sampler_works_on_cached_memmap(tok, corpus, tmp_path):
    tokens = build_token_stream(corpus.train, tok, tmp_path / "t.npy", progress=False)
    s = WindowSampler(tokens, 64, 2, seed=0)
    b = s.next_batch()
    assert b.shape == (2, 64) and b.dtype == torch.long


def test_short_corpus_is_a_clear_error():
    with pytest.raises(DataError, match=r"corpus has 100 tokens, fewer than one window of 129 tokens \(seq_len \+ l_extra\)"):
        WindowSampler(_stream(100), window=129, batch_size=2, seed=0)
    with pytest.raises(DataError, match="must be positive"):
        WindowSampler(_stream(100), window=0, batch_size=2, seed=0)
