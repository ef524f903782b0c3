"""sentencepiece Tokenizer: deterministic training, lossless round trip, clear errors (offline)."""

from pathlib import Path

import pytest

from trainer.data import Tokenizer, load_corpus
from trainer.data.tokenizer import training_sentences
from trainer.errors import DataError

FIXTURE = Path(__file__).parent / "assets" / "austen" / "Rdata.rdb"
VOCAB = 400


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(f"austen:{FIXTURE}")


@pytest.fixture(scope="module")
def tok(corpus, tmp_path_factory):
    return Tokenizer.train(corpus.train, tmp_path_factory.mktemp("tok") / "tokenizer.model", VOCAB)


def test_train_is_deterministic(corpus, tmp_path):
    a = Tokenizer.train(corpus.train, tmp_path / "a.model", VOCAB, seed=0)
    b = Tokenizer.train(corpus.train, tmp_path / "b.model", VOCAB, seed=0)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    assert a.model_bytes == (tmp_path / "a.model").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing
    assert a.encode(corpus.heldout[0]) == b.encode(corpus.heldout[0])


def test_special_ids_and_vocab(tok):
    assert (tok.sp.unk_id(), tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 3)
    assert tok.vocab_size == VOCAB == len(tok)
    assert tok.path.name == "tokenizer.model" and tok.path.is_file()


def test_round_trip_is_lossless(tok, corpus):
    for text in corpus.heldout + [
        "  two leading spaces,\ttabs\r\nand CRLF\n\n\nblank lines ",
        "unseen: 日本語, émoji 😀, Ω≈ç√∫",
        "",
    ]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert tok.sp.id_to_piece(tok.encode("\n")[0]) == "\n"


def test_load_round_trip_and_errors(tok, tmp_path):
    again = Tokenizer.load(tok.path)
    assert again.encode("It is a truth universally acknowledged") == tok.encode("It is a truth universally acknowledged")
    copy = again.save(tmp_path / "copy" / "tokenizer.model")
    assert copy.read_bytes() == tok.path.read_bytes()
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(DataError, match="not a valid sentencepiece model"):
        Tokenizer.load(bad)
    bad.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        Tokenizer.load(bad)


def test_training_errors(corpus, tmp_path):
    with pytest.raises(DataError, match="too small"):
        Tokenizer.train(corpus.train, tmp_path / "t.model", 100)
    with pytest.raises(DataError, match="model_type"):
        Tokenizer.train(corpus.train, tmp_path / "t.model", VOCAB, model_type="wordpiece")
    with pytest.raises(DataError, match="empty"):
        Tokenizer.train(["", "  \n\n "], tmp_path / "t.model", VOCAB)
    with pytest.raises(DataError, match="could not train.*Vocabulary size too high"):
        Tokenizer.train(["a tiny corpus"], tmp_path / "t.model", 5000)
    with pytest.raises(DataError, match="could not train.*smaller than required_chars") as e:
        Tokenizer.train(["".join(chr(0x4E00 + i) for i in range(100))], tmp_path / "t.model", 300)
    assert "INTERNAL" not in str(e.value)
    assert not (tmp_path / "t.model").exists()


def test_unigram_and_subsampling(corpus, tmp_path):
    u = Tokenizer.train(corpus.train, tmp_path / "u.model", VOCAB, model_type="unigram")
    assert u.decode(u.encode(corpus.heldout[1])) == corpus.heldout[1]
    kw = dict(vocab_size=VOCAB, max_sentences=25)  # of 33 paragraphs
    a = Tokenizer.train(corpus.train, tmp_path / "s1.model", seed=1, **kw)
    b = Tokenizer.train(corpus.train, tmp_path / "s2.model", seed=1, **kw)
    c = Tokenizer.train(corpus.train, tmp_path / "s3.model", seed=2, **kw)
    assert a.model_bytes == b.model_bytes != c.model_bytes  # subsample is seeded


def test_training_sentences_split_long_paragraphs():
    long_line = "word " * 5000  # 25 kB, one line
    sents = training_sentences(["short para\n\nsecond para", long_line])
    assert sents[:2] == ["short para", "second para"]
    assert all(len(s.encode()) <= 8192 for s in sents)
    assert "".join(sents[2:]) == long_line
