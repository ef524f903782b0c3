"""Export a causal checkpoint (decoder or RNN) to a Hugging Face model directory.

    python -m olharness.export_hf RUN_DIR OUT_DIR
    lm_eval --model hf --model_args pretrained=OUT_DIR,trust_remote_code=True --tasks ...

The directory holds our weights (prefix ``olh.``), ``olharness/hf_template/``'s config, model and tokenizer code, and
``olh_core.py``: the trainer's model code bundled verbatim, so the export loads without this package and computes
exactly what ``ol`` computes. ``max_position_embeddings`` follows ``ol``'s ``max_length`` default, and BOS is EOS (the
document separator in training), so ``hf`` uses the same prefix for an empty context as ``ol``."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from trainer.errors import OLHError

ROOT = Path(__file__).resolve().parent
TEMPLATE = ROOT / "hf_template"
#: trainer modules bundled into olh_core.py, in dependency order
CORE_SOURCES = ["errors.py", "registry.py", "models/registry.py", "models/positional.py", "models/layers.py",
                "models/decoder.py", "models/rnn.py"]
_INTERNAL_IMPORT = re.compile(r"^(from trainer[.\w]* import .*|import trainer[.\w]*|from __future__ import .*)$")


def bundle_core() -> str:
    """The trainer's model code as one self-contained module (intra-project imports removed)."""
    import trainer
    base = Path(trainer.__file__).resolve().parent
    parts = ['"""olharness model code bundled from trainer/ by olharness.export_hf (do not edit)."""',
             "from __future__ import annotations", ""]
    for rel in CORE_SOURCES:
        lines = [ln for ln in (base / rel).read_text().splitlines() if not _INTERNAL_IMPORT.match(ln.strip())]
        parts += [f"# ---- trainer/{rel} " + "-" * 60, *lines, ""]
    return "\n".join(parts) + "\n"


def export(run_dir: str | Path, out_dir: str | Path, max_length: int | None = None) -> Path:
    """Write the HF directory for the checkpoint in run_dir; returns out_dir."""
    from safetensors.torch import save_file
    from trainer.checkpoint import checkpoint_dir, load_model
    ck = checkpoint_dir(run_dir)
    model, cfg, tok = load_model(ck, "cpu")
    if model.kind != "causal":
        raise OLHError(f"export_hf: only causal checkpoints (decoder, rnn) can be exported; {ck} is '{cfg.model.arch}'")
    bound = model.max_positions
    max_len = int(max_length) if max_length else (int(bound) if bound else 8 * cfg.data.seq_len)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("configuration_olh.py", "modeling_olh.py", "tokenization_olh.py"):
        shutil.copyfile(TEMPLATE / name, out / name)
    (out / "olh_core.py").write_text(bundle_core())
    shutil.copyfile(ck / "tokenizer.model", out / "tokenizer.model")
    save_file({f"olh.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    config = {"model_type": "olh", "architectures": ["OLHForCausalLM"],
              "auto_map": {"AutoConfig": "configuration_olh.OLHConfig",
                           "AutoModelForCausalLM": "modeling_olh.OLHForCausalLM"},
              "olh_model": cfg.model.__dict__ | {"dropout": 0.0}, "olh_seq_len": cfg.data.seq_len,
              "max_position_embeddings": max_len, "vocab_size": tok.vocab_size, "bos_token_id": tok.eos_id,
              "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id, "tie_word_embeddings": False,
              "torch_dtype": "float32"}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok_config = {"tokenizer_class": "OLHTokenizer",
                  "auto_map": {"AutoTokenizer": ["tokenization_olh.OLHTokenizer", None]},
                  "bos_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                  "model_max_length": max_len, "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (out / "olh_export.json").write_text(json.dumps({"source": str(ck), "l_train": cfg.data.seq_len,
                                                      "arch": cfg.model.arch, "pe": cfg.model.pe}, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m olharness.export_hf", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="run directory (or its checkpoint/) of a decoder or rnn checkpoint")
    p.add_argument("out_dir", help="directory to write the Hugging Face model into")
    p.add_argument("--max_length", type=int, default=None, help="context length for hf (default: as ol)")
    a = p.parse_args(argv)
    try:
        out = export(a.run_dir, a.out_dir, a.max_length)
    except OLHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {a.run_dir} -> {out}  (load with trust_remote_code=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
