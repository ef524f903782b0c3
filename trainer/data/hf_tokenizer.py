"""A Hugging Face tokenizer behind our tokenizer's interface: ``--arch hf`` trains on the model's own
vocabulary. Documents are encoded without special tokens and joined by ``eos_id``, as for ours."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from trainer.errors import DataError


class HFTokenizer:
    def __init__(self, tok, source: str):
        self.tok, self.source = tok, str(source)
        self.path = self.source  # recorded in the token-stream cache metadata
        if self.eos_id is None:
            raise DataError(f"the tokenizer of {source} has no EOS token (needed to separate documents)")
        self._bytes = None

    @classmethod
    def load(cls, source: str | Path, trust_remote_code: bool = False) -> "HFTokenizer":
        from transformers import AutoTokenizer
        try:
            tok = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot load a tokenizer from {source}: {str(e).strip().splitlines()[0]}") from None
        return cls(tok, source)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False, verbose=False)["input_ids"]

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    @property
    def eos_id(self) -> int | None:
        return self.tok.eos_token_id

    @property
    def bos_id(self) -> int:
        return self.tok.bos_token_id if self.tok.bos_token_id is not None else self.eos_id

    @property
    def model_bytes(self) -> bytes:
        """The saved tokenizer files, concatenated in name order: the token-stream cache key."""
        if self._bytes is None:
            with tempfile.TemporaryDirectory() as d:
                self.tok.save_pretrained(d)
                h = hashlib.sha256()
                for f in sorted(Path(d).iterdir()):
                    h.update(f.name.encode() + b"\0" + f.read_bytes())
                self._bytes = h.digest()
        return self._bytes

    def save(self, directory: str | Path) -> None:
        self.tok.save_pretrained(str(directory))
