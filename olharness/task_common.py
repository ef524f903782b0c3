"""What our lm-eval tasks share: task metadata, reference tokenizer, held-out documents.

The metadata keys are ``METADATA_KEYS`` below (tasks/lsm/README.md has the details); lm-eval merges
``--model_args`` into the metadata too, so ``pretrained=RUN_DIR`` is seen. Any other key is an error
listing them, except model arguments and the keys of our other task families (``OTHER_TASK_KEYS``)."""
from __future__ import annotations

import inspect
import json
import logging
import os
from functools import lru_cache
from pathlib import Path

from trainer.errors import DataError, OLHError

log = logging.getLogger(__name__)

METADATA_KEYS = {
    "l_train": "training length in tokens (else from run_dir, else from pretrained: our run or HF export)",
    "run_dir": "run directory of ours (gives l_train and the tokenizer)",
    "tokenizer": "reference tokenizer (sentencepiece .model, folder, or HF tokenizer name; else run_dir's or "
                 "pretrained's): the scored model's, so that lengths are exact",
    "texts": "held-out texts: .txt, .jsonl with 'text', a folder of them, or corpus:SPEC; default held-out Austen",
    "seed": "seed of the task's random draws",
    "n_docs": "number of task documents",
    "divergence": "LSM divergence (sce, kl, sym_kl, js, l2)",
    "kl_direction": "direction of divergence=kl (long_short, short_long)",
}
#: set by lm-eval itself, or by the task YAMLs
LM_EVAL_KEYS = {"version", "config_source", "_metadata", "pretrained"}
#: keys read by the other olharness task families (LongBench-E, mini long-context suite)
OTHER_TASK_KEYS = {"longbench_dir", "data_source", "mini_lc_tokenizer", "mini_lc_seed", "mini_lc_n",
                   "mini_lc_para_tokens", "mini_lc_l_train"}
DEFAULT_SEED = 1234


@lru_cache(maxsize=1)
def _model_arg_names() -> frozenset[str]:
    """Constructor arguments of ol and lm-eval's hf model: lm-eval merges --model_args into metadata."""
    from olharness.model import OLM
    names = set(inspect.signature(OLM.__init__).parameters)
    try:
        from lm_eval.models.huggingface import HFLM
        names |= set(inspect.signature(HFLM.__init__).parameters)
    except ImportError:  # pragma: no cover
        pass
    return frozenset(names - {"self", "kwargs", "unknown"})


def check_metadata(md: dict, task: str) -> dict:
    """Validate the task metadata; returns it. OLHError naming the valid keys for an unknown one."""
    md = dict(md or {})
    unknown = set(md) - set(METADATA_KEYS) - LM_EVAL_KEYS - OTHER_TASK_KEYS
    if unknown:
        unknown -= _model_arg_names()
    if unknown:
        raise OLHError(f"{task}: unknown metadata key(s) {', '.join(sorted(unknown))}; valid: "
                       f"{', '.join(METADATA_KEYS)}")
    return md


def _int(md: dict, key: str, default: int | None = None, minimum: int = 1) -> int | None:
    if md.get(key) in (None, ""):
        return default
    try:
        v = int(md[key])
    except (TypeError, ValueError):
        raise OLHError(f"metadata {key} must be an integer, got {md[key]!r}") from None
    if v < minimum:
        raise OLHError(f"metadata {key} must be >= {minimum}, got {v}")
    return v


def seed_of(md: dict) -> int:
    return _int(md, "seed", DEFAULT_SEED, minimum=0)


# ---------- l_train and the reference tokenizer -------------------------------------------------------------
def _ol_checkpoint(path) -> Path | None:
    """The checkpoint folder if path is one of our run/checkpoint directories."""
    if not path:
        return None
    p = Path(str(path))
    for ck in (p / "checkpoint", p):
        if (ck / "config.json").is_file() and (ck / "model.safetensors").is_file() and (ck / "tokenizer.model").is_file():
            try:
                if "data" in json.loads((ck / "config.json").read_text()):
                    return ck
            except (OSError, json.JSONDecodeError):
                return None
    return None


def run_facts(path) -> dict:
    """What one of our runs (``run_dir``, ``l_train``, ``tokenizer``) or HF exports (``l_train``, ``tokenizer``
    when it has a tokenizer.model) at ``path`` tells a task; {} for anything else."""
    ck = _ol_checkpoint(path)
    if ck is not None:
        return {"run_dir": str(path), "l_train": int(json.loads((ck / "config.json").read_text())["data"]["seq_len"]),
                "tokenizer": str(ck / "tokenizer.model")}
    try:
        cfg = json.loads((Path(str(path)) / "config.json").read_text())
    except (OSError, json.JSONDecodeError, TypeError):
        return {}
    if not isinstance(cfg, dict) or "olh_seq_len" not in cfg:
        return {}
    sp = Path(str(path)) / "tokenizer.model"
    return {"l_train": int(cfg["olh_seq_len"]), **({"tokenizer": str(sp)} if sp.is_file() else {})}


def resolve_l_train(md: dict, task: str) -> int:
    v = _int(md, "l_train")
    if v is not None:
        return v
    for key in ("run_dir", "pretrained"):
        if md.get(key):
            if "l_train" in (facts := run_facts(md[key])):
                return facts["l_train"]
            if key == "run_dir":
                raise OLHError(f"{task}: metadata run_dir={md[key]} holds no checkpoint of ours (checkpoint/config.json)")
    raise OLHError(f"{task}: the training length is unknown; pass --metadata l_train=N (or run_dir=RUN_DIR, "
                   "or use --model ol with pretrained=RUN_DIR)")


class GeneratedTestTask:
    """Mixin for our class-based tasks whose documents are generated in ``download()`` into
    ``self.dataset["test"]`` and whose requests are built in ``construct_requests`` (no prompt)."""

    def _configure(self, cfg: dict, metrics: list[tuple[str, object, bool]], **defaults) -> None:
        """ConfigurableTask.__init__ on the YAML's config (without its ``class`` key) over our ``defaults``,
        with our ``(metric, aggregation, higher_is_better)`` list and ``_process_results``."""
        cfg = {"test_split": "test", **defaults, **cfg, "process_results": self._process_results,
               "metric_list": [{"metric": n, "aggregation": a, "higher_is_better": h} for n, a, h in metrics]}
        cfg.pop("class", None)
        super().__init__(config=cfg)

    def has_training_docs(self):
        return False

    def has_validation_docs(self):
        return False

    def has_test_docs(self):
        return True

    def test_docs(self):
        return self.dataset["test"]

    def doc_to_text(self, doc, doc_to_text=None):
        return ""


class RefTokenizer:
    """encode/decode with a sentencepiece model (ours) or a Hugging Face tokenizer, no specials. A folder's
    own code runs only with the user's ``trust_remote_code=True``; our exports need none (sentencepiece)."""

    def __init__(self, spec: str, trust_remote_code: bool = False):
        self.spec = str(spec)
        p = Path(self.spec)
        sp_file = p if p.is_file() else p / "tokenizer.model" if (p / "tokenizer.model").is_file() else None
        if sp_file is not None and not (p.is_dir() and (p / "tokenizer_config.json").is_file() and not _is_ours(p)):
            from trainer.data import Tokenizer
            self._sp, self._hf, self.kind = Tokenizer.load(sp_file), None, "sentencepiece"
            return
        try:
            from transformers import AutoTokenizer
            self._sp, self.kind = None, "hf"
            self._hf = AutoTokenizer.from_pretrained(self.spec, trust_remote_code=bool(trust_remote_code))
        except Exception as e:  # noqa: BLE001 - any loading failure is a bad spec
            raise OLHError(f"cannot load tokenizer '{spec}' (a sentencepiece .model, a folder, or an HF name): "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text) if self._sp else self._hf.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self._sp.decode(ids) if self._sp else self._hf.decode(list(ids))


def _is_ours(p: Path) -> bool:
    return (p / "olh_export.json").is_file()


def trusts_remote_code(md: dict) -> bool:
    """Did the user pass trust_remote_code=True (a model argument, merged into the metadata)?"""
    return str(md.get("trust_remote_code", "")).strip().lower() in ("1", "true", "yes")


def resolve_tokenizer(md: dict, task: str) -> RefTokenizer:
    trust = trusts_remote_code(md)
    if md.get("tokenizer"):
        return RefTokenizer(md["tokenizer"], trust)
    for key in ("run_dir", "pretrained"):  # one of our runs (its checkpoint/), or a folder with tokenizer.model
        d = _ol_checkpoint(md.get(key)) or (Path(str(md[key])) if md.get(key) else None)
        if d is not None and (d / "tokenizer.model").is_file():
            return RefTokenizer(d / "tokenizer.model")
    if md.get("pretrained"):
        return RefTokenizer(md["pretrained"], trust)
    raise OLHError(f"{task}: no reference tokenizer; pass --metadata tokenizer=PATH_OR_NAME (or run_dir=RUN_DIR)")


# ---------- documents ---------------------------------------------------------------------------------------
def load_texts(md: dict, task: str) -> list[tuple[str, str]]:
    """[(name, text)] of the held-out documents named by metadata ``texts`` (default Austen)."""
    spec = str(md.get("texts") or "")
    if not spec or spec == "austen" or spec.startswith("corpus:"):
        from trainer.data import load_corpus
        c = load_corpus(spec.removeprefix("corpus:") or "austen")
        return list(zip(c.heldout_names, c.heldout))
    p = Path(str(spec)).expanduser()
    if not p.exists():
        raise DataError(f"{task}: metadata texts={spec} does not exist")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".jsonl") and f.is_file())
    docs: list[tuple[str, str]] = []
    for f in files:
        if f.suffix == ".txt":
            docs.append((f.name, f.read_text(encoding="utf-8", errors="replace")))
        elif f.suffix == ".jsonl":
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines()):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = row["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{task}: {f} line {i + 1} is not a JSON object with a 'text' field") from None
                docs.append((str(row.get("title") or row.get("id") or f"{f.name}:{i}"), str(text)))
        else:
            raise DataError(f"{task}: texts file {f} must be .txt or .jsonl")
    docs = [(n, t) for n, t in docs if t.strip()]
    if not docs:
        raise DataError(f"{task}: no non-empty .txt/.jsonl documents in {spec}")
    return docs


_TOKENIZED: dict[tuple, list[tuple[str, list[int]]]] = {}


def tokenized_docs(md: dict, task: str, tok: RefTokenizer) -> list[tuple[str, list[int]]]:
    """The documents encoded with the reference tokenizer (cached: the tasks of one run share them)."""
    key = (tok.spec, str(md.get("texts") or ""), os.environ.get("OLH_AUSTEN", ""))
    if key not in _TOKENIZED:
        if len(_TOKENIZED) > 4:
            _TOKENIZED.clear()
        _TOKENIZED[key] = [(name, tok.encode(text)) for name, text in load_texts(md, task)]
    return _TOKENIZED[key]
