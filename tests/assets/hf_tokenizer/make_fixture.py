"""Write the tiny byte-level BPE tokenizer the --arch hf tests use (tokenizer.json + tokenizer_config.json).

    python tests/assets/hf_tokenizer/make_fixture.py

Trained on the committed Austen fixture (tests/assets/austen/Rdata.rdb) with the `tokenizers` library,
so the tests build Llama/Qwen2/GPT-NeoX/GPT-2/Mistral models with a real fast tokenizer and no download.
"""
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from trainer.data import read_rdata_rdb

HERE = Path(__file__).parent
VOCAB = 384  # 256 bytes + specials + a few merges: small embedding tables keep the tests fast


def main():
    books = read_rdata_rdb(HERE.parent / "austen" / "Rdata.rdb")
    texts = list(books.values())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.save(str(HERE / "tokenizer.json"))
    (HERE / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|pad|>", "model_max_length": 1_000_000,
        "clean_up_tokenization_spaces": False}, indent=2) + "\n")


if __name__ == "__main__":
    main()
