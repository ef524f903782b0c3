"""Token stream (documents joined by EOS, cached as ``.npy``) and a seeded, resumable window sampler."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from trainer.data._io import atomic_write
from trainer.data.tokenizer import Tokenizer
from trainer.errors import DataError

#: Bump when the stream layout changes, so old caches are never reused.
STREAM_FORMAT = 1


def stream_key(texts: list[str], tokenizer: Tokenizer) -> str:
    """SHA-256 over the format version, the tokenizer file bytes and every text (length-prefixed)."""
    h = hashlib.sha256()
    h.update(f"olharness-token-stream-v{STREAM_FORMAT}\0".encode())
    h.update(hashlib.sha256(tokenizer.model_bytes).digest())
    h.update(len(texts).to_bytes(8, "little"))
    for t in texts:
        b = t.encode("utf-8", errors="surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _key_path(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".key.json")


def _load_cached(cache_path: Path, key: str) -> np.ndarray | None:
    try:
        meta = json.loads(_key_path(cache_path).read_text())
        if meta.get("key") != key:
            return None
        arr = np.load(cache_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None  # missing or unreadable cache: rebuild
    if arr.dtype != np.int32 or arr.ndim != 1 or arr.shape[0] != meta.get("n_tokens"):
        return None
    return arr


def _tokenize(texts: list[str], tokenizer: Tokenizer, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm
    eos = np.array([tokenizer.eos_id], dtype=np.int32)
    parts: list[np.ndarray] = []
    total = sum(len(t) for t in texts)
    with tqdm(total=total, unit="char", unit_scale=True, desc="tokenizing", disable=not progress) as bar:
        for i, text in enumerate(texts):
            if i:
                parts.append(eos)
            parts.append(np.asarray(tokenizer.encode(text), dtype=np.int32))
            bar.update(len(text))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def build_token_stream(texts: list[str], tokenizer: Tokenizer, cache_path: str | os.PathLike | None = None, *,
                       progress: bool = True) -> np.ndarray:
    """The documents' tokens joined by ``eos_id`` (int32, 1-D). With ``cache_path`` (a ``.npy``, returned as a
    read-only memory map) a sidecar ``.key.json`` hashes the tokenizer file and the texts: a cache whose key
    differs is rebuilt, never reused."""
    texts = list(texts)
    if not texts:
        raise DataError("cannot build a token stream from an empty list of documents")
    if cache_path is None:
        return _tokenize(texts, tokenizer, progress)
    cache_path = Path(cache_path)
    key = stream_key(texts, tokenizer)
    if (arr := _load_cached(cache_path, key)) is not None:
        return arr
    tokens = _tokenize(texts, tokenizer, progress)
    kp = _key_path(cache_path)
    kp.unlink(missing_ok=True)  # a crash between the two writes leaves no (stale) key: a miss
    buf = io.BytesIO()
    np.save(buf, tokens, allow_pickle=False)
    atomic_write(cache_path, buf.getvalue())
    meta = {"key": key, "n_tokens": int(tokens.shape[0]), "n_docs": len(texts), "tokenizer": str(tokenizer.path),
            "tokenizer_sha256": hashlib.sha256(tokenizer.model_bytes).hexdigest(),
            "vocab_size": tokenizer.vocab_size, "format": STREAM_FORMAT}
    atomic_write(kp, (json.dumps(meta, indent=1) + "\n").encode())
    return np.load(cache_path, mmap_mode="r", allow_pickle=False)


class WindowSampler:
    """Random contiguous windows of ``window`` tokens, ``batch_size`` per batch, at offsets uniform in
    ``[0, len(tokens) - window]`` from PCG64([seed, rank]) (a stream per rank); ``state_dict()`` lets a
    resumed run continue with bit-identical batches."""

    def __init__(self, tokens: np.ndarray, window: int, batch_size: int, seed: int, rank: int = 0):
        tokens = np.asarray(tokens) if not isinstance(tokens, np.ndarray) else tokens
        if tokens.ndim != 1:
            raise DataError(f"token stream must be 1-D, got shape {tuple(tokens.shape)}")
        if int(window) < 1 or int(batch_size) < 1:
            raise DataError(f"window ({window}) and batch_size ({batch_size}) must be positive")
        n = int(tokens.shape[0])
        if n < window:
            raise DataError(f"corpus has {n} tokens, fewer than one window of {window} tokens (seq_len + l_extra); "
                            "use a larger corpus or a shorter seq_len")
        self.tokens, self.window, self.batch_size = tokens, int(window), int(batch_size)
        self.seed, self.rank, self.batches_served = int(seed), int(rank), 0
        self.rng = np.random.Generator(np.random.PCG64([self.seed, self.rank]))

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def next_offsets(self) -> np.ndarray:
        """The start offsets of the next batch (advances the sampler)."""
        offs = self.rng.integers(0, self.n_tokens - self.window, size=self.batch_size, endpoint=True)
        self.batches_served += 1
        return offs

    def next_batch(self) -> torch.Tensor:
        """A ``torch.long`` tensor of shape ``(batch_size, window)``."""
        idx = self.next_offsets()[:, None] + np.arange(self.window)[None, :]
        return torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))

    def state_dict(self) -> dict:
        return {"bit_generator": _jsonable(self.rng.bit_generator.state), "batches_served": self.batches_served,
                "seed": self.seed, "rank": self.rank, "window": self.window, "batch_size": self.batch_size,
                "n_tokens": self.n_tokens}

    def load_state_dict(self, d: dict) -> None:
        """Restore a ``state_dict()``; ``DataError`` if it was saved for another window, batch size,
        rank or token stream (the batches would silently differ)."""
        try:
            for field in ("window", "batch_size", "n_tokens", "rank"):
                if field in d and int(d[field]) != getattr(self, field):
                    raise DataError(f"sampler state was saved with {field}={d[field]}, but this sampler has "
                                    f"{field}={getattr(self, field)}; resume with the same data and settings")
            state = d["bit_generator"]
            if state.get("bit_generator") != "PCG64":
                raise DataError(f"sampler state uses bit generator {state.get('bit_generator')!r}, expected PCG64")
            rng = np.random.Generator(np.random.PCG64())
            pcg = {"state": int(state["state"]["state"]), "inc": int(state["state"]["inc"])}
            rng.bit_generator.state = {"bit_generator": "PCG64", "state": pcg, "has_uint32": int(state["has_uint32"]),
                                       "uinteger": int(state["uinteger"])}
            served = int(d["batches_served"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"sampler state is malformed (missing or bad field {e})") from None
        self.rng, self.batches_served = rng, served


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return int(obj) if isinstance(obj, np.integer) else obj
