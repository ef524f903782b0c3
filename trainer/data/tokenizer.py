"""SentencePiece tokenizer (BPE or unigram) trained on the training split, saved as one ``.model``.

Deterministic (one thread, our own seeded subsampling, fixed options: byte-identical files) and
lossless on ordinary text (identity normalization, no dummy prefix, whitespace kept, byte fallback;
only U+2581, sentencepiece's space marker, decodes to a space)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from trainer.data._io import atomic_write, read_nonempty
from trainer.errors import DataError

UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
MODEL_TYPES = ("bpe", "unigram", "char", "word")
#: sentencepiece skips longer input sentences; we split paragraphs to stay below it (bytes).
MAX_SENTENCE_BYTES = 8192
#: Cap on training sentences (paragraphs); larger inputs are subsampled with the seed.
MAX_SENTENCES = 1_000_000


def _spm():
    import sentencepiece
    return sentencepiece


def training_sentences(texts: list[str], max_bytes: int = MAX_SENTENCE_BYTES) -> list[str]:
    """Split documents into paragraphs (blank-line separated); split long ones at lines, then at
    ``max_bytes``-byte pieces, so sentencepiece never drops an input as too long."""
    out: list[str] = []
    for text in texts:
        for para in text.replace("\r\n", "\n").split("\n\n"):
            if not para.strip():
                continue
            if len(para.encode("utf-8")) <= max_bytes:
                out.append(para)
                continue
            for line in para.split("\n"):
                while line:
                    # max_bytes // 4 characters are at most max_bytes bytes in UTF-8.
                    cut = line if len(line.encode("utf-8")) <= max_bytes else line[: max_bytes // 4]
                    if cut.strip():
                        out.append(cut)
                    line = line[len(cut) :]
    return out


class Tokenizer:
    """Thin wrapper over a ``sentencepiece.SentencePieceProcessor`` loaded from ``path``."""

    def __init__(self, model_proto: bytes, path: Path):
        self.path = Path(path)
        self._proto = model_proto
        self.sp = _spm().SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError on garbage
            raise DataError(f"tokenizer file {self.path} is not a valid sentencepiece model ({e})") from None
        if self.sp.get_piece_size() <= 0:
            raise DataError(f"tokenizer file {self.path} has an empty vocabulary")

    @classmethod
    def train(cls, texts: list[str], path: str | os.PathLike, vocab_size: int, model_type: str = "bpe", seed: int = 0,
              *, max_sentences: int = MAX_SENTENCES, character_coverage: float = 0.9995) -> "Tokenizer":
        """Train on ``texts`` (documents), write ``path`` atomically and return the tokenizer. Special ids: unk 0,
        bos 1, eos 2, pad 3; ``vocab_size`` counts them, the 256 byte pieces and ``"\\n"``. Beyond
        ``max_sentences`` paragraphs, a seeded random subset of that size is used."""
        spm = _spm()
        path = Path(path)
        if model_type not in MODEL_TYPES:
            raise DataError(f"unknown tokenizer model_type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
        sentences = training_sentences(list(texts))
        if not sentences:
            raise DataError("cannot train a tokenizer: the training texts are empty")
        if len(sentences) > max_sentences:
            keep = np.sort(np.random.default_rng(seed).choice(len(sentences), max_sentences, replace=False))
            sentences = [sentences[i] for i in keep]
        minimum = 4 + 256 + 1 + 1  # specials + bytes + "\n" + at least one learned piece
        if vocab_size < minimum:
            raise DataError(f"tokenizer vocab_size {vocab_size} is too small; byte fallback needs at least {minimum}")
        spm.set_random_generator_seed(int(seed))
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=buf, vocab_size=int(vocab_size), model_type=model_type,
                character_coverage=character_coverage, byte_fallback=True, unk_id=UNK_ID, bos_id=BOS_ID,
                eos_id=EOS_ID, pad_id=PAD_ID, user_defined_symbols=["\n"], normalization_rule_name="identity",
                add_dummy_prefix=False, remove_extra_whitespaces=False, split_digits=False,
                max_sentence_length=MAX_SENTENCE_BYTES, num_threads=1, hard_vocab_limit=True, minloglevel=2,
                # we subsample ourselves (seeded), so sentencepiece never samples or shuffles
                # (train_extremely_large_corpus is deprecated and ignored by sentencepiece >= 0.2)
                input_sentence_size=0, shuffle_input_sentence=False, seed_sentencepiece_size=1_000_000)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            msg = msg.rsplit("] ", 1)[-1]  # drop sentencepiece's "INTERNAL: file.cc(638) [check]" prefix
            raise DataError(f"sentencepiece could not train a {vocab_size}-piece {model_type} tokenizer: {msg}") from None
        proto = buf.getvalue()
        atomic_write(path, proto)
        return cls(proto, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a ``.model`` file; ``DataError`` if it is missing or not a sentencepiece model."""
        return cls(read_nonempty(Path(path), "tokenizer file"), Path(path))

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids) -> str:
        if isinstance(ids, np.ndarray) or hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.sp.decode([int(i) for i in ids])

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def pad_id(self) -> int:
        return self.sp.pad_id()

    @property
    def model_bytes(self) -> bytes:
        """The serialized model (what ``path`` holds); used for cache keys and checkpoints."""
        return self._proto

    def save(self, path: str | os.PathLike) -> Path:
        """Write a copy of the model to ``path`` (atomically), e.g. into a checkpoint folder."""
        return atomic_write(path, self._proto)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(path={str(self.path)!r}, vocab_size={self.vocab_size})"
