"""Reader of r-cran-janeaustenr's Rdata.rdb, its lookup order and the book split (offline)."""

import struct
import zlib
from pathlib import Path

import pytest

from trainer.data import austen
from tests.rdata_writer import compress_chunk, serialize_strsxp, write_rdata_rdb
from trainer.data.austen import find_austen, read_rdata_rdb, split_austen
from trainer.errors import DataError

FIXTURE = Path(__file__).parent / "assets" / "austen" / "Rdata.rdb"
TITLES = [
    "EMMA",
    "MANSFIELD PARK",
    "NORTHANGER ABBEY",
    "Persuasion",
    "PRIDE AND PREJUDICE",
    "SENSE AND SENSIBILITY",
]


@pytest.fixture(autouse=True)
def _no_real_lookup(monkeypatch, tmp_path):
    """Never touch the installed package, the user's cache or apt in these tests."""
    monkeypatch.delenv("OLH_AUSTEN", raising=False)
    monkeypatch.setenv("OLH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(austen, "INSTALLED_PATH", tmp_path / "not-installed" / "Rdata.rdb")

    def no_download(dest):
        raise DataError("downloads are disabled in tests")

    monkeypatch.setattr(austen, "_download", no_download)


# ---- reader ----------------------------------------------------------------------------------


def test_fixture_titles_lines_na_utf8():
    books = read_rdata_rdb(FIXTURE)
    assert list(books) == TITLES
    emma = books["EMMA"].split("\n")
    assert emma[0] == "EMMA" and len(emma) == 44
    assert emma[18] == ""  # NA element -> empty line
    assert "déjà vu — “Château”" in books["EMMA"]
    assert "£1,000 and ½ a crown" in books["Persuasion"]
    assert "😀" in books["PRIDE AND PREJUDICE"] and "𝔄" in books["PRIDE AND PREJUDICE"]
    assert books["PRIDE AND PREJUDICE"].split("\n")[9].startswith("It is a truth universally acknowledged")
    assert [len(books[t].split("\n")) for t in TITLES] == [44, 34, 44, 43, 41, 43]


def test_hand_built_chunk_independent_of_writer(tmp_path):
    """A chunk assembled byte by byte (not with our writer): version 3 header, NA, UTF-8."""
    payload = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    payload += struct.pack(">ii", 16, 3)  # STRSXP of length 3
    payload += struct.pack(">ii", (64 << 12) | 9, 4) + b"EMMA"
    payload += struct.pack(">ii", 9, -1)  # NA_STRING
    payload += struct.pack(">ii", (8 << 12) | 9, 5) + "café".encode()
    f = tmp_path / "one.rdb"
    f.write_bytes(struct.pack(">i", len(payload)) + zlib.compress(payload))
    assert read_rdata_rdb(f) == {"EMMA": "EMMA\n\ncafé"}


def test_writer_matches_serialize_format():
    data = serialize_strsxp(["T", None, "é"])
    assert data.startswith(b"X\n\x00\x00\x00\x03")
    assert struct.pack(">ii", 9, -1) in data
    assert struct.pack(">ii", (8 << 12) | 9, 2) + "é".encode() in data


def test_skips_other_chunks_attributes_typed_compression_latin1_v2(tmp_path):
    # an integer vector (INTSXP=13), skipped
    ints = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    ints += struct.pack(">ii", 13, 2) + struct.pack(">ii", 7, 8)
    # a character vector with an attribute flag and trailing attribute bytes (ignored)
    attr = serialize_strsxp(["Persuasion", "x"])
    attr = attr.replace(struct.pack(">ii", 16, 2), struct.pack(">ii", 16 | (1 << 9), 2), 1) + b"\x00\x00\x04\x02junk"
    # version-2 serialization (no encoding name) with a latin-1 element
    v2 = b"X\n" + struct.pack(">iii", 2, 0x030602, 0x020300) + struct.pack(">ii", 16, 2)
    v2 += struct.pack(">ii", (64 << 12) | 9, 4) + b"EMMA"
    v2 += struct.pack(">ii", (4 << 12) | 9, 4) + "café".encode("latin-1")
    f = tmp_path / "mixed.rdb"
    f.write_bytes(
        compress_chunk(ints)
        + compress_chunk(attr, "X")
        + compress_chunk(v2, "2")
        + compress_chunk(serialize_strsxp(["Sense & Sensibility", "y"]), "Z")
        + compress_chunk(serialize_strsxp(["Stored", "z"]), "0")
    )
    books = read_rdata_rdb(f)
    assert books == {
        "Persuasion": "Persuasion\nx",
        "EMMA": "EMMA\ncafé",
        "Sense & Sensibility": "Sense & Sensibility\ny",
        "Stored": "Stored\nz",
    }


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:4] + b"\x78\x9c" + b"\xff" * 40 + b[46:], "corrupt compressed chunk"),
        (lambda b: b[:4] + b"garbage" + b[11:], "not zlib/bzip2/xz"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"\x00\x01", "truncated R data chunk"),
        (lambda b: b"", "is empty"),
    ],
)
def test_corrupt_file_names_path(tmp_path, mangle, match):
    f = tmp_path / "bad.rdb"
    f.write_bytes(mangle(FIXTURE.read_bytes()))
    with pytest.raises(DataError, match=match) as e:
        read_rdata_rdb(f)
    assert str(f) in str(e.value)


def test_wrong_length_and_non_xdr(tmp_path):
    f = tmp_path / "len.rdb"
    payload = serialize_strsxp(["EMMA"])
    f.write_bytes(struct.pack(">i", len(payload) + 1) + zlib.compress(payload))
    with pytest.raises(DataError, match="header says"):
        read_rdata_rdb(f)
    f.write_bytes(compress_chunk(b"A\n3\n262657\n"))
    with pytest.raises(DataError, match="ASCII R serialization"):
        read_rdata_rdb(f)
    f.write_bytes(compress_chunk(payload[:-2]))
    with pytest.raises(DataError, match="runs past the end"):
        read_rdata_rdb(f)
    f.write_bytes(compress_chunk(struct.pack(">i", 0) + b"X\n"))
    with pytest.raises(DataError, match="holds no character vectors|R serialization"):
        read_rdata_rdb(f)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_rdata_rdb(tmp_path / "nope.rdb")


# ---- split -----------------------------------------------------------------------------------


def test_split_by_book():
    train, held = split_austen(read_rdata_rdb(FIXTURE))
    assert list(train) == ["Emma", "Mansfield Park", "Sense and Sensibility", "Pride and Prejudice"]
    assert list(held) == ["Persuasion", "Northanger Abbey"]
    assert train["Emma"].startswith("EMMA\n") and held["Persuasion"].startswith("Persuasion\n")


def test_split_matches_variant_titles_and_reports_missing(tmp_path):
    books = {
        "Emma: A Novel": "a",
        "mansfield park": "b",
        "SENSE & SENSIBILITY": "c",
        "Pride and Prejudice (1813)": "d",
        "PERSUASION": "e",
        "Northanger-Abbey": "f",
    }
    train, held = split_austen(books)
    assert list(train.values()) == ["a", "b", "c", "d"] and list(held.values()) == ["e", "f"]
    del books["Northanger-Abbey"]
    with pytest.raises(DataError, match="'Northanger Abbey' is missing"):
        split_austen(books)


# ---- lookup order ----------------------------------------------------------------------------


def test_find_explicit_env_installed_cache(tmp_path, monkeypatch):
    assert find_austen(FIXTURE) == FIXTURE
    assert find_austen(FIXTURE.parent) == FIXTURE  # a folder holding Rdata.rdb
    with pytest.raises(DataError, match="does not exist"):
        find_austen(tmp_path / "missing.rdb")  # explicit path: no silent fallback

    monkeypatch.setenv("OLH_AUSTEN", str(FIXTURE))
    assert find_austen() == FIXTURE
    monkeypatch.setenv("OLH_AUSTEN", str(tmp_path / "gone.rdb"))
    with pytest.raises(DataError, match="OLH_AUSTEN"):
        find_austen()
    monkeypatch.delenv("OLH_AUSTEN")

    cached = write_rdata_rdb(tmp_path / "cache" / "janeaustenr" / "Rdata.rdb", {"EMMA": ["EMMA"]})
    assert find_austen() == cached
    installed = write_rdata_rdb(tmp_path / "inst" / "Rdata.rdb", {"EMMA": ["EMMA"]})
    monkeypatch.setattr(austen, "INSTALLED_PATH", installed)
    assert find_austen() == installed  # installed package wins over the cache


def test_find_downloads_into_cache(tmp_path, monkeypatch):
    calls = []

    def fake_download(dest):
        calls.append(dest)
        write_rdata_rdb(dest, {"EMMA": ["EMMA"]})

    monkeypatch.setattr(austen, "_download", fake_download)
    got = find_austen()
    assert got == tmp_path / "cache" / "janeaustenr" / "Rdata.rdb" and calls == [got]


def test_find_reports_everything_tried(tmp_path):
    with pytest.raises(DataError) as e:
        find_austen()
    msg = str(e.value)
    assert "OLH_AUSTEN" in msg and "not-installed" in msg and str(tmp_path / "cache") in msg
    assert "downloads are disabled" in msg and "\n" not in msg
