"""Data pipeline: corpora (Jane Austen by default), sentencepiece tokenizer, token stream, window sampler."""
from trainer.data.austen import find_austen, read_rdata_rdb
from trainer.data.corpus import Corpus, load_corpus
from trainer.data.stream import WindowSampler, build_token_stream
from trainer.data.tokenizer import Tokenizer

__all__ = ["load_corpus", "Corpus", "Tokenizer", "build_token_stream", "WindowSampler", "read_rdata_rdb", "find_austen"]
