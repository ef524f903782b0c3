"""load_corpus: Austen split, local txt/jsonl/parquet through datasets, clear errors (offline)."""

import json
from pathlib import Path

import pytest

from trainer.data import Corpus, load_corpus
from trainer.errors import DataError

FIXTURE = Path(__file__).parent / "assets" / "austen" / "Rdata.rdb"


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(monkeypatch, tmp_path):
    """Keep datasets' arrow cache out of the user's home and force offline mode."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)


def test_austen_from_path_split_by_book():
    c = load_corpus(f"austen:{FIXTURE}")
    assert isinstance(c, Corpus) and c.name == "austen"
    assert len(c.train) == 4 and c.train[0].startswith("EMMA\n")
    assert [t.split("\n")[0] for t in c.train] == [
        "EMMA",
        "MANSFIELD PARK",
        "SENSE AND SENSIBILITY",
        "PRIDE AND PREJUDICE",
    ]
    assert c.heldout_names == ["Persuasion", "Northanger Abbey"]
    assert c.heldout[1].startswith("NORTHANGER ABBEY\n")


def test_austen_env_var(monkeypatch):
    monkeypatch.setenv("OLH_AUSTEN", str(FIXTURE))
    assert load_corpus("austen").heldout_names == ["Persuasion", "Northanger Abbey"]


def test_austen_missing_path_is_loud(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(f"austen:{tmp_path / 'nope.rdb'}")


def _write_txt_folder(d: Path, n: int) -> list[str]:
    d.mkdir()
    texts = [f"Document {i}.\nIts second line, ünïcödé {i}.\n\nA new paragraph.\n" for i in range(n)]
    for i, t in enumerate(texts):
        (d / f"doc{i:02d}.txt").write_text(t, encoding="utf-8")
    (d / ".hidden.txt").write_text("ignored")
    (d / "notes.md").write_text("ignored")
    return texts


def test_txt_folder_holds_out_whole_documents(tmp_path):
    texts = _write_txt_folder(tmp_path / "books", 10)
    c = load_corpus(str(tmp_path / "books"), heldout_frac=0.2, seed=3)
    assert c.name == "books" and len(c.train) == 8 and len(c.heldout) == 2
    assert sorted(c.train + c.heldout) == sorted(texts)  # documents intact, nothing lost
    assert all(n.startswith("doc") for n in c.heldout_names)
    assert [texts.index(h) for h in c.heldout] == [int(n[3:]) for n in c.heldout_names]
    again = load_corpus(str(tmp_path / "books"), heldout_frac=0.2, seed=3)
    assert again.heldout == c.heldout  # deterministic by seed
    other = [load_corpus(str(tmp_path / "books"), heldout_frac=0.2, seed=s).heldout_names for s in range(4)]
    assert len({tuple(o) for o in other}) > 1  # and the seed matters


def test_single_txt_file_is_cut(tmp_path):
    f = tmp_path / "one.txt"
    lines = [f"line {i} of a long single document" for i in range(200)]
    f.write_text("\n".join(lines))
    c = load_corpus(str(f), heldout_frac=0.1)
    assert len(c.train) == 1 and len(c.heldout) == 1
    assert c.train[0] + c.heldout[0] == f.read_text()
    assert c.heldout[0].startswith("line ")  # cut at a line break
    assert 0.05 < len(c.heldout[0]) / len(f.read_text()) < 0.16
    assert c.heldout_names == ["one (last 10%)"]


def test_jsonl_and_parquet(tmp_path):
    rows = [{"text": f"row {i} text", "title": f"T{i}"} for i in range(5)]
    j = tmp_path / "data.jsonl"
    j.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = load_corpus(str(j), heldout_frac=0.2)
    assert len(c.train) == 4 and len(c.heldout) == 1 and c.heldout_names[0].startswith("T")

    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": [r["text"] for r in rows]}), p)
    c = load_corpus(str(p), heldout_frac=0.4, seed=1)
    assert len(c.train) == 3 and len(c.heldout) == 2
    assert all(n.startswith("data.parquet:") for n in c.heldout_names)


def test_mixed_folder(tmp_path):
    d = tmp_path / "mix"
    d.mkdir()
    (d / "a.txt").write_text("plain text document")
    (d / "b.jsonl").write_text(json.dumps({"text": "json doc 1"}) + "\n" + json.dumps({"text": "json doc 2"}) + "\n")
    c = load_corpus(str(d), heldout_frac=0.3)
    assert sorted(c.train + c.heldout) == ["json doc 1", "json doc 2", "plain text document"]


def test_missing_text_field_names_file_and_field(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl has no 'text' field \(columns: content\)"):
        load_corpus(str(f))
    # inside a folder: the offending file is named
    d = tmp_path / "folder"
    d.mkdir()
    (d / "good.jsonl").write_text(json.dumps({"text": "fine"}) + "\n")
    (d / "worse.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match=r"worse\.jsonl.*'text'"):
        load_corpus(str(d))
    # a null text in some row
    n = tmp_path / "nulls.jsonl"
    n.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": None}) + "\n")
    with pytest.raises(DataError, match=r"nulls\.jsonl row 1 has no 'text'"):
        load_corpus(str(n))


def test_empty_and_missing(tmp_path):
    e = tmp_path / "empty.jsonl"
    e.write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(DataError, match="is empty"):
        load_corpus(str(e))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="has no .txt"):
        load_corpus(str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(str(tmp_path / "absent.jsonl"))
    with pytest.raises(DataError, match="does not exist"):
        load_corpus("./no/such/dir")
    with pytest.raises(DataError, match="unsupported type"):
        (tmp_path / "x.csv").write_text("text\nhello\n")
        load_corpus(str(tmp_path / "x.csv"))
    with pytest.raises(DataError, match="heldout_frac"):
        load_corpus(str(e), heldout_frac=1.0)


def test_unreadable_file_is_named(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"caf\xe9 in latin-1\n")
    with pytest.raises(DataError, match=r"cannot read corpus file .*latin1\.txt as text: UnicodeDecodeError"):
        load_corpus(str(f))
    j = tmp_path / "ints.jsonl"
    j.write_text(json.dumps({"text": 5}) + "\n")
    with pytest.raises(DataError, match=r"ints\.jsonl row 0: 'text' is int"):
        load_corpus(str(j))


def test_hub_name_goes_through_datasets(monkeypatch):
    """No network: load_dataset is replaced; checks the call and the offline error message."""
    import datasets

    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        if name == "pg19":
            raise ConnectionError("Couldn't reach 'pg19' on the Hub (OfflineModeIsEnabled)")
        return datasets.Dataset.from_dict({"text": ["a b c", "d e f", "g h"], "short_book_title": ["A", "B", "C"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(DataError, match=r"hub dataset 'pg19' split 'test'.*offline"):
        load_corpus("pg19:test")
    c = load_corpus("someone/books", heldout_frac=0.3)
    assert calls == [("pg19", "test"), ("someone/books", "train")]
    assert c.name == "someone/books" and len(c.train) == 2 and c.heldout_names[0] in {"A", "B", "C"}
