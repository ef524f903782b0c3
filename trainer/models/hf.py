"""Any pretrained Hugging Face causal LM (`--arch hf --init_from DIR_OR_HUB_NAME`) as a model family.

`HFCausalLM` wraps an `AutoModelForCausalLM` behind the other families' interface, so the LM loss and every alignment
axis go through trainer/alignment/ unchanged. Context extension edits the RoPE settings before the weights load
(`HF_ROPE`), so `save_pretrained` writes them and a plain `from_pretrained` scores the same. Under ZeRO-3,
`HfDeepSpeedConfig` makes `from_pretrained` load each weight straight into its shard."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.errors import OLHError
from trainer.models.registry import MODELS
from trainer.registry import Registry

HF_ROPE = Registry("rope scaling method for arch=hf")


def _rope_params(config) -> dict:
    params = getattr(config, "rope_parameters", None)
    if not params or "rope_theta" not in params:
        raise OLHError(f"rope scaling needs a RoPE model; {config.model_type} has no rope_parameters "
                       f"(learned or absolute positions)")
    return dict(params)


@HF_ROPE.register("none", help="leave the model's RoPE settings as they are")
def _hf_none(config, s: float, seq_len: int) -> None:
    pass


@HF_ROPE.register("pi", help="position interpolation: rope_type linear, factor rope_scale")
def _hf_pi(config, s, seq_len):
    config.rope_parameters = _rope_params(config) | {"rope_type": "linear", "factor": float(s)}
    config.max_position_embeddings = max(int(config.max_position_embeddings * s), seq_len)


@HF_ROPE.register("ntk", help="NTK scaling as transformers implements it: rope_type dynamic (frequencies "
                              "change only past the original max_position_embeddings)")
def _hf_ntk(config, s, seq_len):
    # dynamic NTK measures the extension against max_position_embeddings, so it must stay the original
    config.rope_parameters = _rope_params(config) | {"rope_type": "dynamic", "factor": float(s)}


@HF_ROPE.register("yarn", help="YaRN: rope_type yarn, factor rope_scale, original length = max_position_embeddings")
def _hf_yarn(config, s, seq_len):
    orig = int(config.max_position_embeddings)
    config.rope_parameters = _rope_params(config) | {"rope_type": "yarn", "factor": float(s),
                                                     "original_max_position_embeddings": orig}
    config.max_position_embeddings = max(int(orig * s), seq_len)


@HF_ROPE.register("abf", help="adjusted base frequency: rope_theta * rope_scale^2 (as the native abf)")
def _hf_abf(config, s, seq_len):
    p = _rope_params(config)
    config.rope_parameters = p | {"rope_theta": float(p["rope_theta"]) * float(s) ** 2}
    config.max_position_embeddings = max(int(config.max_position_embeddings * s), seq_len)


def _olh_rope(config, method: str, s: float, seq_len: int) -> None:
    """Our own exports (model_type olh, olharness/export_hf.py) keep RoPE in the trainer's ModelConfig
    fields; their context length follows the export's rule (8 x the training length unless bounded)."""
    from trainer.models.positional import ROPE_SCALING
    if method != "none":
        if method not in ROPE_SCALING:
            raise OLHError(f"rope_scaling={method} is not available for our exported decoder; valid: "
                           f"{', '.join(ROPE_SCALING.names())}")
        config.olh_model = dict(config.olh_model) | {"rope_scaling": method, "rope_scale": float(s)}
    config.olh_seq_len = seq_len
    if config.olh_model.get("pe") != "learned":
        config.max_position_embeddings = 8 * seq_len


def apply_rope_scaling(config, method: str, s: float, seq_len: int) -> None:
    """Edit `config` in place for `--rope_scaling method --rope_scale s` at training length seq_len."""
    if s <= 0:
        raise OLHError(f"rope_scale={s} must be positive")
    if config.model_type == "olh":
        return _olh_rope(config, method, s, seq_len)
    HF_ROPE.get(method)(config, s, seq_len)


def _needs_remote_code(source: str) -> bool:
    cfg = Path(source) / "config.json"
    try:
        return "auto_map" in json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def load_config(source: str, trust_remote_code: bool):
    from transformers import AutoConfig
    if not trust_remote_code and _needs_remote_code(source):
        raise OLHError(f"{source} ships its own model code (auto_map in config.json); "
                       f"pass --trust_remote_code to run it")
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "trust_remote_code" in str(e):
            msg = f"{source} ships its own model code; pass --trust_remote_code to run it"
        raise OLHError(f"cannot load a model config from {source}: {msg}") from None


@MODELS.register("hf", help="a pretrained Hugging Face AutoModelForCausalLM (--init_from DIR_OR_HUB_NAME)")
class HFCausalLM(nn.Module):
    kind = "causal"
    pretrained = True  # built by load_pretrained from --init_from, not from the ModelConfig sizes

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    @classmethod
    def check_config(cls, mcfg) -> None:
        """Names are checked here because the rope methods differ from the native ones (yarn)."""
        HF_ROPE.get(mcfg.rope_scaling)

    @classmethod
    def load(cls, source: str, mcfg, seq_len: int, *, ds_config: dict | None = None,
             dtype: torch.dtype = torch.float32) -> "HFCausalLM":
        """Config (+ RoPE extension) from `source`, then its weights; under ZeRO-3 (`ds_config`)
        the weights are loaded partitioned across ranks."""
        from transformers import AutoModelForCausalLM
        config = load_config(source, mcfg.trust_remote_code)
        apply_rope_scaling(config, mcfg.rope_scaling, mcfg.rope_scale, seq_len)
        ds_ref = None
        if ds_config is not None and ds_config.get("zero_optimization", {}).get("stage") == 3:
            from transformers.integrations import HfDeepSpeedConfig
            ds_ref = HfDeepSpeedConfig(ds_config)  # must be alive during from_pretrained
        hf = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype,
                                                  trust_remote_code=mcfg.trust_remote_code)
        if ds_ref is not None and not all(hasattr(p, "ds_id") for p in hf.parameters()):
            raise OLHError(f"ZeRO-3: {source} was not loaded partitioned (every rank would hold the whole model)")
        model = cls(hf)
        model.source = str(source)
        model._ds_ref = ds_ref  # keep it alive: transformers holds only a weakref
        if mcfg.gradient_checkpointing:
            if not hf.supports_gradient_checkpointing:
                raise OLHError(f"{type(hf).__name__} does not support --gradient_checkpointing")
            hf.activation_checkpointing_enable({"use_reentrant": False})
        return model

    @property
    def max_positions(self) -> int | None:
        """A bound only for learned absolute positions (GPT-2, our learned-PE decoder); RoPE is unbounded."""
        c = self.hf.config
        if c.model_type == "olh":
            return c.olh_model.get("max_positions") if c.olh_model.get("pe") == "learned" else None
        return None if getattr(c, "rope_parameters", None) else c.max_position_embeddings

    def _aliases(self) -> dict[str, str]:
        """Tied weights (e.g. GPT-2's lm_head = wte): {second name: first name} of one parameter."""
        first, out = {}, {}
        for name, p in self.named_parameters(remove_duplicate=False):
            out.update({name: first[id(p)]} if id(p) in first else {})
            first.setdefault(id(p), name)
        return out

    def state_dict(self, *args, **kwargs):
        """Each tied weight once (safetensors refuses shared tensors); load_state_dict restores the alias."""
        sd = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for alias in self._aliases():
            sd.pop(prefix + alias, None)
        return sd

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        sd = dict(state_dict)
        for alias, name in self._aliases().items():
            if name in sd:
                sd.setdefault(alias, sd[name])
        return super().load_state_dict(sd, strict=strict, assign=assign)

    def forward(self, tokens: torch.Tensor, *, return_hidden: bool = False):
        out = self.hf(input_ids=tokens, output_hidden_states=return_hidden, use_cache=False)
        if not return_hidden:
            return out.logits
        if out.hidden_states is None:
            raise OLHError(f"{type(self.hf).__name__} does not return hidden states; use --target logits")
        # hidden_states[0] is the embedding output; one entry per layer follows (as the native decoder)
        return out.logits, [F.layer_norm(h, h.shape[-1:]) for h in out.hidden_states[1:]]

    def save_pretrained(self, directory: str | Path, state_dict: dict) -> None:
        """The HF model directory: gathered weights (keys without our `hf.` prefix) + config + tokenizer."""
        sd = {k[len("hf."):]: v for k, v in state_dict.items() if k.startswith("hf.")}
        self.hf.save_pretrained(str(directory), state_dict=sd)
        self.tokenizer.save(directory)
        marker = Path(self.source) / "olh_export.json"  # our export: scorers trust its code by this file
        if marker.is_file():
            info = json.loads(marker.read_text()) | {"l_train": self.hf.config.olh_seq_len, "fine_tuned_from": self.source}
            (Path(directory) / "olh_export.json").write_text(json.dumps(info, indent=2) + "\n")

    @staticmethod
    def lm_eval_args(ck: Path, mcfg) -> tuple[str, str]:
        """How the grid runner scores a checkpoint: lm-eval's hf model (+ the exact LSM) on ck/hf."""
        args = f"pretrained={ck / 'hf'},dtype=auto" + (",trust_remote_code=True" if mcfg.trust_remote_code else "")
        return "hf-lsm", args
