"""Configuration of an exported checkpoint (``model_type: olh``): ``olh_model`` holds the trainer's
``ModelConfig`` fields, ``olh_seq_len`` the training length."""
from transformers import PretrainedConfig


class OLHConfig(PretrainedConfig):
    model_type = "olh"

    def __init__(self, olh_model=None, olh_seq_len=128, max_position_embeddings=1024, vocab_size=2000,
                 bos_token_id=1, eos_token_id=2, pad_token_id=3, **kwargs):
        self.olh_model = dict(olh_model or {})
        self.olh_seq_len = int(olh_seq_len)
        self.max_position_embeddings = int(max_position_embeddings)
        self.vocab_size = int(vocab_size)
        self.num_hidden_layers = int(self.olh_model.get("n_layer", 1))  # read by transformers' generate()
        kwargs.setdefault("tie_word_embeddings", False)  # the head reuses wte inside the model itself
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
