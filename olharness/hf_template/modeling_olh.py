"""An exported decoder (or RNN) as a transformers ``PreTrainedModel`` on the trainer's own code
(``olh_core.py``), so its logits equal ``ol``'s. Generation recomputes the whole prefix at each step."""
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_olh import OLHConfig
from .olh_core import MODELS, PositionalEncoding


class OLHForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = OLHConfig
    base_model_prefix = "olh"
    main_input_name = "input_ids"
    _no_split_modules = []

    def __init__(self, config: OLHConfig):
        super().__init__(config)
        self.olh = MODELS.get(config.olh_model["arch"])(SimpleNamespace(**config.olh_model))
        self.post_init()

    def _init_weights(self, module):
        """Weights always come from model.safetensors; only the positional encodings' non-persistent
        buffers (RoPE/sinusoidal frequencies, ALiBi slopes), left empty by transformers' meta-device
        loading, are recomputed here."""
        if isinstance(module, PositionalEncoding):
            with torch.device("cpu"):
                fresh = type(module)(SimpleNamespace(**self.config.olh_model))
            for name, buf in fresh.named_buffers(recurse=False):
                getattr(module, name).copy_(buf)

    def get_input_embeddings(self):
        return self.olh.wte

    def set_input_embeddings(self, value):
        self.olh.wte = value

    def get_output_embeddings(self):
        return None

    def _logits(self, input_ids, attention_mask):
        if attention_mask is None or bool(attention_mask.all()):
            return self.olh(input_ids)
        out = None
        for i in range(input_ids.shape[0]):  # padded rows: run each on its own tokens
            keep = attention_mask[i].bool()
            row = self.olh(input_ids[i:i + 1, keep])
            if out is None:
                out = row.new_zeros(input_ids.shape + (row.shape[-1],))
            out[i, keep] = row[0]
        return out

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None,
                output_hidden_states=None, **kwargs):
        hidden = None
        if output_hidden_states and (attention_mask is None or bool(attention_mask.all())):
            # as transformers: the embedding output, then one (layer-normalized) state per layer
            logits, per_layer = self.olh(input_ids, return_hidden=True)
            hidden = (self.olh.wte(input_ids), *per_layer)
        else:
            logits = self._logits(input_ids, attention_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}
