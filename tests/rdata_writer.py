"""R's serialization of character vectors and Rdata.rdb chunks: the inverse of trainer/data/austen.py's
reader, byte-identical to R for plain vectors; builds the test fixtures."""
import bz2
import lzma
import os
import struct
import zlib
from pathlib import Path

from trainer.data._io import atomic_write
from trainer.data.austen import _CHARSXP, _STRSXP


def serialize_strsxp(lines: list[str | None]) -> bytes:
    """R XDR serialization (version 3, UTF-8) of a character vector, as R's ``serialize`` writes it."""
    out = [b"X\n", struct.pack(">iii", 3, 0x040201, 0x030500), struct.pack(">i", 5), b"UTF-8"]
    out.append(struct.pack(">ii", _STRSXP, len(lines)))
    for ln in lines:
        if ln is None:
            out.append(struct.pack(">ii", _CHARSXP, -1))
            continue
        raw = ln.encode("utf-8")
        # gp levels: ASCII_MASK (64) for pure ASCII, else UTF8_MASK (8).
        levels = 64 if raw.isascii() else 8
        out.append(struct.pack(">ii", (levels << 12) | _CHARSXP, len(raw)))
        out.append(raw)
    return b"".join(out)


def compress_chunk(payload: bytes, method: str = "zlib") -> bytes:
    """One ``.rdb`` chunk: 4-byte big-endian uncompressed length + compressed stream.

    ``method`` is ``"zlib"`` (R's ``compress=1``, no type byte), or ``"Z"``, ``"2"``, ``"X"``,
    ``"0"`` for R's typed variants (zlib, bzip2, xz, stored).
    """
    head = struct.pack(">i", len(payload))
    if method == "zlib":
        return head + zlib.compress(payload, 6)
    body = {
        "Z": lambda p: zlib.compress(p, 6),
        "2": lambda p: bz2.compress(p, 9),
        "X": lambda p: lzma.compress(p, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        "0": lambda p: p,
    }[method](payload)
    return head + method.encode("ascii") + body


def write_rdata_rdb(path: str | os.PathLike, books: dict[str, list[str | None]]) -> Path:
    """Write ``{title: lines}`` as an ``Rdata.rdb`` (one zlib chunk per book, file order kept).

    ``lines`` should start with the title line. Used to build test fixtures.
    """
    path = Path(path)
    data = b"".join(compress_chunk(serialize_strsxp(lines)) for lines in books.values())
    atomic_write(path, data)
    return path
