"""Data pipeline: corpora (Jane Austen by default), sentencepiece tokenizer, token stream, sampler.

Typical use::

    corpus = load_corpus("austen")
    tok = Tokenizer.train(corpus.train, run_dir / "tokenizer.model", vocab_size=2000)
    tokens = build_token_stream(corpus.train, tok, cache_path=run_dir / "train_tokens.npy")
    sampler = WindowSampler(tokens, window=seq_len + l_extra_max, batch_size=8, seed=0, rank=rank)
    batch = sampler.next_batch()          # LongTensor (8, window)
"""

from trainer.data.austen import find_austen, read_rdata_rdb
from trainer.data.corpus import Corpus, load_corpus
from trainer.data.stream import WindowSampler, build_token_stream
from trainer.data.tokenizer import Tokenizer

__all__ = [
    "load_corpus",
    "Corpus",
    "Tokenizer",
    "build_token_stream",
    "WindowSampler",
    "read_rdata_rdb",
    "find_austen",
]
