"""Jane Austen's six novels from the Debian package ``r-cran-janeaustenr``, read without R.

``data/Rdata.rdb`` is R's lazy-load database: chunks of a 4-byte big-endian uncompressed length and a
zlib stream (or, after a type byte ``Z``/``2``/``X``/``0``, zlib/bzip2/xz/stored), each an R XDR
serialization of one character vector: one element per line, the title first, NA as length -1.
``find_austen`` locates the file and never falls back to another corpus."""
from __future__ import annotations

import bz2
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from trainer.data._io import read_nonempty
from trainer.errors import DataError

PACKAGE = "r-cran-janeaustenr"
RDB_RELPATH = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
INSTALLED_PATH = Path("/") / RDB_RELPATH
ENV_PATH = "OLH_AUSTEN"
ENV_CACHE = "OLH_CACHE"

#: Canonical book names in split order; training books first.
AUSTEN_TRAIN = ["Emma", "Mansfield Park", "Sense and Sensibility", "Pride and Prejudice"]
AUSTEN_HELDOUT = ["Persuasion", "Northanger Abbey"]

# R SEXP types and CHARSXP encoding flags (R's serialize.c / Defn.h).
_STRSXP = 16
_CHARSXP = 9
_LATIN1_MASK = 1 << 2
_BYTES_MASK = 1 << 1
#: type byte of a chunk's compressed stream (after the length); zlib streams may also come without one
_DECOMPRESSORS = {b"Z": zlib.decompressobj, b"2": bz2.BZ2Decompressor, b"X": lzma.LZMADecompressor}


# ---------- Reader ------------------------------------------------------------------------------------------
def _split_chunks(data: bytes, path: Path) -> list[bytes]:
    """Decompress every chunk of an ``.rdb`` file, in file order."""
    chunks = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise DataError(f"{path}: truncated R data chunk at byte {pos} (not a valid Rdata.rdb)")
        (ulen,) = struct.unpack(">i", data[pos : pos + 4])
        if ulen < 0:
            raise DataError(f"{path}: bad chunk length {ulen} at byte {pos} (not a valid Rdata.rdb)")
        start = pos + 4
        kind = data[start : start + 1]
        if kind == b"\x78":  # zlib header: R's default compress=1, no type byte
            dec = zlib.decompressobj()
        elif kind in _DECOMPRESSORS:
            dec, start = _DECOMPRESSORS[kind](), start + 1
        elif kind == b"0":  # stored uncompressed
            body = data[start + 1 : start + 1 + ulen]
            if len(body) != ulen:
                raise DataError(f"{path}: truncated R data chunk at byte {pos}")
            chunks.append(body)
            pos = start + 1 + ulen
            continue
        else:
            raise DataError(f"{path}: chunk at byte {pos} is not zlib/bzip2/xz data (not a valid Rdata.rdb)")
        try:
            body = dec.decompress(data[start:])
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as e:
            raise DataError(f"{path}: corrupt compressed chunk at byte {pos} ({e})") from None
        if not dec.eof:
            raise DataError(f"{path}: truncated compressed chunk at byte {pos}")
        if len(body) != ulen:
            raise DataError(f"{path}: chunk at byte {pos} decompresses to {len(body)} bytes, header says {ulen}")
        chunks.append(body)
        pos = len(data) - len(dec.unused_data)
    return chunks


class _XDR:
    """Cursor over an R XDR serialization; only what a character vector needs."""

    def __init__(self, buf: bytes, path: Path, index: int):
        self.buf, self.pos, self.path, self.index = buf, 0, path, index

    def fail(self, what: str) -> DataError:
        return DataError(f"{self.path}: chunk {self.index}: {what} (not a valid R serialization)")

    def int(self) -> int:
        if self.pos + 4 > len(self.buf):
            raise self.fail(f"unexpected end of data at byte {self.pos}")
        (v,) = struct.unpack_from(">i", self.buf, self.pos)
        self.pos += 4
        return v

    def bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"string of {n} bytes runs past the end at byte {self.pos}")
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v


def _parse_strsxp(buf: bytes, path: Path, index: int) -> list[str | None] | None:
    """Lines of a serialized character vector, ``None`` for NA; ``None`` if not a STRSXP."""
    if buf[:2] != b"X\n":
        fmt = {b"A\n": "ASCII", b"B\n": "native binary"}.get(buf[:2], "unknown")
        raise DataError(f"{path}: chunk {index} uses the {fmt} R serialization format; only XDR ('X') is supported")
    r = _XDR(buf, path, index)
    r.pos = 2
    version = r.int()
    r.int(), r.int()  # writer R version, minimal reader R version
    native_enc = "utf-8"
    if version == 3:
        native_enc = r.bytes(r.int()).decode("ascii", "replace").lower()
    elif version != 2:
        raise r.fail(f"unsupported serialization version {version}")
    flags = r.int()
    if flags & 0xFF != _STRSXP:
        return None
    n = r.int()
    if n == -1:  # long vector: two ints
        hi, lo = r.int(), r.int()
        n = (hi << 32) + (lo & 0xFFFFFFFF)
    if n < 0:
        raise r.fail(f"negative vector length {n}")
    lines: list[str | None] = []
    for _ in range(n):
        cflags = r.int()
        if cflags & 0xFF != _CHARSXP:
            raise r.fail(f"element of type {cflags & 0xFF} inside a character vector")
        length = r.int()
        if length == -1:
            lines.append(None)
            continue
        raw = r.bytes(length)
        levels = cflags >> 12
        if levels & _LATIN1_MASK:
            enc = "latin-1"
        elif levels & _BYTES_MASK:
            enc = "utf-8"  # "bytes" strings: best effort
        else:
            enc = "utf-8" if native_enc in ("utf-8", "utf8") else native_enc
        try:
            lines.append(raw.decode(enc))
        except (UnicodeDecodeError, LookupError):
            lines.append(raw.decode("utf-8", errors="replace"))
    # Attributes (names, class, ...) may follow; the text does not need them.
    return lines


def read_rdata_rdb(path: str | os.PathLike) -> dict[str, str]:
    """``{title: text}`` of every character vector in an ``.rdb`` file, in file order: the title is the first
    non-empty line, the text all lines (NA as an empty one). Other chunks are skipped."""
    path = Path(path)
    data = read_nonempty(path, "R data file")
    books: dict[str, str] = {}
    for i, chunk in enumerate(_split_chunks(data, path)):
        lines = _parse_strsxp(chunk, path, i)
        if lines is None:
            continue
        title = next((ln.strip() for ln in lines if ln and ln.strip()), None)
        if title is None:
            continue  # an empty character vector carries no text
        if title in books:
            raise DataError(f"{path}: two character vectors share the title {title!r}")
        books[title] = "\n".join("" if ln is None else ln for ln in lines)
    if not books:
        raise DataError(f"{path} holds no character vectors (not a janeaustenr Rdata.rdb)")
    return books


# ---------- Locating the file -------------------------------------------------------------------------------
def cache_root() -> Path:
    """Project cache root: ``$OLH_CACHE`` or ``~/.cache/olharness``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "olharness"


def cache_path() -> Path:
    return cache_root() / "janeaustenr" / "Rdata.rdb"


def _resolve_explicit(p: str | os.PathLike, origin: str) -> Path:
    """A user-given file, or a directory holding it (package data dir or an extracted .deb)."""
    path = Path(p).expanduser()
    if path.is_dir():
        for cand in (path / "Rdata.rdb", path / "data" / "Rdata.rdb", path / RDB_RELPATH):
            if cand.is_file():
                return cand
        raise DataError(f"{origin} {path} is a folder without Rdata.rdb")
    if not path.is_file():
        raise DataError(f"{origin} {path} does not exist")
    return path


def _download(dest: Path) -> None:
    """``apt-get download`` the package and extract ``Rdata.rdb`` to ``dest`` (atomically)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} not found")
    print(f"olharness: Jane Austen corpus not found; downloading Debian package {PACKAGE} into {dest.parent}",
          file=sys.stderr, flush=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        try:
            res = subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataError(f"apt-get download {PACKAGE} failed ({e})") from None
        debs = sorted(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if res.returncode != 0 or not debs:
            msg = (res.stderr or res.stdout).strip().splitlines()
            raise DataError(f"apt-get download {PACKAGE} failed ({msg[-1] if msg else f'exit {res.returncode}'}; "
                            "try 'apt-get update' first)")
        extract = Path(tmp) / "x"
        res = subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(extract)], capture_output=True, text=True,
                             timeout=300)
        src = extract / RDB_RELPATH
        if res.returncode != 0 or not src.is_file():
            raise DataError(f"dpkg-deb -x {debs[-1].name} did not produce {RDB_RELPATH}")
        read_rdata_rdb(src)  # validate before it enters the cache
        os.replace(src, dest)


def find_austen(path: str | os.PathLike | None = None) -> Path:
    """``Rdata.rdb`` from ``path`` (a file, or a folder holding it) -> ``$OLH_AUSTEN`` -> the installed package ->
    the project cache -> ``apt-get download`` into that cache. A given path that does not exist is an
    error, not a fallback; failing all, the ``DataError`` lists what was tried."""
    if path is not None:
        return _resolve_explicit(path, "Austen corpus path")
    env = os.environ.get(ENV_PATH)
    if env:
        return _resolve_explicit(env, f"${ENV_PATH}=")
    cached = cache_path()
    for p in (INSTALLED_PATH, cached):
        if p.is_file():
            return p
    tried = [f"${ENV_PATH} (unset)", f"{INSTALLED_PATH} (missing)", f"{cached} (missing)"]
    try:
        _download(cached)
    except DataError as e:
        tried.append(f"download: {e}")
    else:
        return cached
    raise DataError("Jane Austen corpus (Rdata.rdb of r-cran-janeaustenr) not found; tried " + "; ".join(tried)
                    + f"; pass a path or set ${ENV_PATH}")


# ---------- Split -------------------------------------------------------------------------------------------
def _norm(title: str) -> str:
    t = title.lower().replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "", t)


def match_books(books: dict[str, str], names: list[str], source: str = "Austen corpus") -> dict[str, str]:
    """``{canonical name: text}`` for ``names``, matching titles case/punctuation-insensitively."""
    keys = {title: _norm(title) for title in books}
    out = {}
    for name in names:
        want = _norm(name)
        hits = [t for t, k in keys.items() if k == want]
        if not hits:  # e.g. "EMMA: A NOVEL" or "SENSE & SENSIBILITY (1811)"
            hits = [t for t, k in keys.items() if want in k]
        if len(hits) != 1:
            why = "is missing" if not hits else f"matches several titles {hits}"
            raise DataError(f"{source}: book {name!r} {why} (titles: {list(books)})")
        out[name] = books[hits[0]]
    return out


def split_austen(books: dict[str, str], source: str = "Austen corpus") -> tuple[dict[str, str], dict[str, str]]:
    """``(train, heldout)`` dicts keyed by canonical name: train = Emma, Mansfield Park, Sense and
    Sensibility, Pride and Prejudice; heldout = Persuasion, Northanger Abbey."""
    return match_books(books, AUSTEN_TRAIN, source), match_books(books, AUSTEN_HELDOUT, source)
