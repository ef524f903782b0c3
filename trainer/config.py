"""Typed run configuration and named presets (the command line that overrides them: trainer/flags.py).

Field names are unique across the four sections, so each is settable as ``--field value``. The whole
config is saved as ``config.json`` beside every checkpoint; ``RunConfig.load`` reads it back."""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from trainer.errors import OLHError

# What a field *is* lives on the field (its metadata), so no other file keeps a list of field names.
# role: setting (default; hashed into cell ids, fixed on --resume) | resume (hashed, may change on --resume) | run
# (paths, logging, threads, device: not hashed, may change) | derived (the run may replace the request, e.g. vocab_size:
# hashed, not compared on --resume). factor=False: not a report grouping factor. A report compares each treatment (the
# `align` section, fields with a `baseline`) with the group at the baselines.


def _f(default, **meta):
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    arch: str = "decoder"
    """Model family: decoder (GPT-style), encdec (T5-style), rnn (LSTM/GRU), hf (a pretrained Hugging Face causal LM named by --init_from)."""
    pe: str = "rope"
    """Positional encoding for decoder/encdec: nope, learned, sinusoidal, rope, alibi (ignored by rnn)."""
    cell: str = "lstm"
    """Recurrent cell for arch=rnn: lstm or gru."""
    vocab_size: int = _f(2000, role="derived")
    """Tokenizer vocabulary size (the sentencepiece model is trained to this size)."""
    d_model: int = 128
    """Width of the residual stream / RNN hidden state."""
    n_layer: int = 4
    """Transformer blocks (decoder side for encdec) or stacked RNN layers."""
    n_enc_layer: int = 0
    """Encoder blocks for encdec; 0 means the same as n_layer."""
    n_head: int = 4
    """Attention heads (d_model must be divisible by it)."""
    mlp_ratio: int = 4
    """MLP hidden width = mlp_ratio * d_model."""
    dropout: float = 0.0
    """Dropout on attention output, MLP output and embeddings."""
    max_positions: int = 1024
    """Positions the `learned` PE table holds; other encodings are unbounded."""
    rope_base: float = 10000.0
    """RoPE base frequency."""
    rope_scaling: str = "none"
    """RoPE context-extension method: none, pi, ntk, abf (see trainer/models/positional.py); arch=hf also yarn (trainer/models/hf.py)."""
    rope_scale: float = 1.0
    """Scale factor of the RoPE extension method (e.g. 4 to go from L to 4L)."""
    trust_remote_code: bool = False
    """arch=hf: allow running model/tokenizer code shipped with --init_from (our own exports need it)."""
    gradient_checkpointing: bool = _f(False, role="resume")
    """arch=hf: recompute activations in the backward pass (less memory, about one more forward)."""
    head: str = "lm"
    """Output head: lm (next-token logits) or scalar (one regression output, the synthetic tasks)."""
    pool: str = "auto"
    """Scalar head reads the last position, the mean over positions or the first (BOS); auto = last
    for causal models, mean for encdec."""
    bos: bool = True
    """Scalar head: put a BOS token before the input, an anchor even a model without positions can count from."""


@dataclass
class DataConfig:
    data: str = "austen"
    """Corpus: 'austen', a local .txt/.jsonl/.parquet file or folder, or a hub dataset name."""
    seq_len: int = 128
    """Training window L in tokens (l_train for LSM and the length-scaled tasks)."""
    tgt_len: int = 16
    """encdec only: the continuation y the decoder predicts (the last tgt_len tokens of a window)."""
    tokenizer_type: str = "bpe"
    """sentencepiece model type: bpe or unigram."""
    tokenizer: str = ""
    """Path of an existing tokenizer.model to reuse instead of training one."""
    task: str = "lm"
    """What is learned: lm (next token on --data), or a synthetic bit task, mean or length
    (trainer/synthetic/tasks.py), trained on lengths U{min_len..seq_len}."""
    min_len: int = 1
    """Synthetic tasks: shortest training length."""
    test_len: int = 50
    """Synthetic tasks: every length 1..test_len is scored."""
    eval_samples: int = 256
    """Synthetic tasks: test sequences per length (the same for every run and seed)."""
    eval_seed: int = 1234
    """Synthetic tasks: seed of the test sets."""
    reparam: str = _f("identity", baseline="identity")
    """Synthetic tasks: the model learns f(target) and is scored on f⁻¹(output) (trainer/synthetic/reparam.py)."""
    target_norm: str = "standardize"
    """Synthetic tasks: standardize f(target) over the training distribution, or none (raw f(target))."""


@dataclass
class AlignConfig:
    alpha: float = _f(0.1, baseline=0.0)
    """Weight of the misalignment loss; 0 trains the plain LM with one forward pass per step."""
    divergence: str = "sce"
    """Divergence D between the long and short views (trainer/alignment/divergences.py)."""
    kl_direction: str = "long_short"
    """For divergence=kl: long_short = KL(p_long || p_short), short_long = the reverse."""
    scope: str = "all"
    """Overlap positions D is applied to: all, last, first, first_frac:F."""
    target: str = "logits"
    """What is aligned: logits, hidden, hidden+logits."""
    hidden_layers: str = "-1"
    """Comma-separated layer indices for target=hidden (negative counts from the top)."""
    hidden_weight: float = 1.0
    """Weight of the hidden-state term in target=hidden+logits."""
    alpha_schedule: str = "constant"
    """Step schedule of alpha: constant, linear, cosine, warmup, step."""
    alpha_start: float = 0.0
    """Starting alpha of the linear/cosine schedules (they reach `alpha` at max_steps)."""
    alpha_warmup: int = 100
    """Steps of the linear ramp 0 -> alpha in the warmup schedule."""
    alpha_milestones: str = ""
    """Piecewise schedule 'STEP:ALPHA,STEP:ALPHA' (alpha before the first milestone)."""
    alpha_len_p: float = 0.0
    """Exponent p of the length-ratio factor (l_test / seq_len)^p; 0 disables it."""
    l_test: int = 0
    """Target evaluation length for the length-ratio factor; 0 means 4 * seq_len."""
    extra_frac: float = 0.5
    """l_extra ~ U[1, extra_frac * seq_len]."""
    pairing: str = "offset"
    """How the long/short views are cut from a window: offset, nested, prefix_suffix (trainer/alignment/pairings.py)."""
    detach_long: bool = False
    """Stop gradients through the long (more context) branch of the misalignment term."""
    pair_windows: bool = _f(False, baseline=False)
    """Always train on both windows (compute-matched baseline when alpha = 0)."""


@dataclass
class TrainConfig:
    max_steps: int = _f(600, role="resume")
    """Optimizer steps."""
    batch_size: int = 16
    """Sequences per micro-batch per process (an optimizer step sees batch_size * grad_accum)."""
    grad_accum: int = 1
    """Micro-batches whose gradients are summed before each optimizer step."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of lr."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on norms, biases, embeddings)."""
    grad_clip: float = 1.0
    """Gradient-norm clip; 0 disables."""
    seed: int = 0
    """Seeds model init, data sampler and l_extra draws."""
    log_every: int = _f(10, role="run")
    """Steps between progress-bar/console updates (metrics.jsonl gets every step)."""
    save_every: int = _f(0, role="run")
    """Steps between checkpoints; 0 saves only at the end."""
    out: str = _f("runs/default", role="run")
    """Run directory: checkpoint/, metrics.jsonl, config.json."""
    deepspeed: str = _f("", role="resume")
    """DeepSpeed JSON config (ds_configs/zero*.json); empty trains with plain torch."""
    resume: bool = _f(False, role="run")
    """Continue from the checkpoint in --out (bit-identical on CPU)."""
    init_from: str = _f("", factor=False)
    """Start from another run's weights (new optimizer); tokenizer and architecture come from it."""
    device: str = _f("auto", role="run")
    """cpu, cuda, or auto."""
    dtype: str = "auto"
    """float32, bfloat16, or auto (bf16 on GPUs that support it, float32 on CPU)."""
    threads: int = _f(0, role="run")
    """torch intra-op threads on CPU; 0 leaves torch's default."""
    compile: bool = _f(False, role="run")
    """torch.compile the model (first steps are slower while it compiles)."""
    peak_tflops: float = _f(0.0, role="run")
    """Peak dense TFLOP/s of one device for MFU; 0 looks the GPU up in trainer/flops.py (none on CPU)."""
    report_to: str = _f("none", role="run")
    """Extra metric sinks beside metrics.jsonl, comma-separated: none, csv, tensorboard, wandb."""


SECTIONS = {"model": ModelConfig, "data": DataConfig, "align": AlignConfig, "train": TrainConfig}


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write through a temp file and a rename: a kill mid-write never leaves half a config."""
        import os
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        if not isinstance(d, dict):
            raise OLHError(f"a config must be a JSON object with sections {', '.join(SECTIONS)}, got {type(d).__name__}")
        parts = {}
        for name, klass in SECTIONS.items():
            if not isinstance(d.get(name, {}), dict):
                raise OLHError(f"config section '{name}' must be an object, got {d[name]!r}")
            sec = dict(d.get(name, {}))
            known = {f.name for f in fields(klass)}
            unknown = set(sec) - known
            if unknown:
                raise OLHError(f"config section '{name}' has unknown field(s): {', '.join(sorted(unknown))}")
            parts[name] = klass(**sec)
        return cls(**parts)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            return validate(cls.from_dict(json.loads(Path(path).read_text())))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OLHError(f"cannot read config {path}: {e}") from None
        except OLHError as e:
            raise OLHError(f"config {path}: {e}") from None

    def set(self, key: str, value) -> None:
        """Set a field by its (unique) name from any section, converting strings to its type."""
        sec, f = FIELD_INDEX.get(key, (None, None))
        if sec is None:
            raise OLHError(f"unknown config field '{key}'")
        setattr(getattr(self, sec), key, _convert(f, value))


def _field_type(f) -> type:
    return f.type if not isinstance(f.type, str) else eval(f.type, vars(typing), {})  # noqa: S307 - our own annotations


def _convert(f, value):
    t = _field_type(f)
    if isinstance(value, str):
        if t is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise OLHError(f"--{f.name} expects true/false, got '{value}'")
        try:
            return t(value)
        except ValueError:
            raise OLHError(f"--{f.name} expects {t.__name__}, got '{value}'") from None
    return value


FIELD_INDEX: dict[str, tuple[str, dataclasses.Field]] = {}
for _sec, _cls in SECTIONS.items():
    for _f in fields(_cls):
        assert _f.name not in FIELD_INDEX, f"duplicate config field {_f.name}"
        FIELD_INDEX[_f.name] = (_sec, _f)


def role(name: str) -> str:
    """The field's role (see the top of this file): setting, resume, run or derived."""
    return FIELD_INDEX[name][1].metadata.get("role", "setting")


def is_factor(name: str) -> bool:
    """Is this field a grouping factor of a grid report (settings, not paths or runtime knobs)?"""
    return role(name) != "run" and FIELD_INDEX[name][1].metadata.get("factor", True)


def is_treatment(name: str) -> bool:
    """Part of the alignment treatment (the `align` section): a report compares it with alpha = 0."""
    sec, f = FIELD_INDEX.get(name, ("", None))
    return sec == "align" or (f is not None and "baseline" in f.metadata)


def baselines() -> dict:
    """{field: its baseline value} (see the top of this file)."""
    return {k: f.metadata["baseline"] for k, (_, f) in FIELD_INDEX.items() if "baseline" in f.metadata}


def hashed_fields(cfg: "RunConfig") -> dict:
    """The fields that define a cell's results and differ from the dataclass defaults: a cell id hashes
    only these, so a new field with a default leaves every finished grid's ids unchanged."""
    out = {}
    for k, (sec, f) in FIELD_INDEX.items():
        v = getattr(getattr(cfg, sec), k)
        if role(k) != "run" and v != f.default:
            out[k] = v
    return out


# Presets: overrides on top of the defaults. `tiny` is for tests (seconds on CPU), `demo` for the CPU
# demo (minutes), `small`/`gpt2` for a GPU.
PRESETS: dict[str, dict] = {
    "tiny": dict(vocab_size=512, d_model=32, n_layer=2, n_head=2, max_positions=256, seq_len=32,
                 tgt_len=8, batch_size=4, max_steps=20, lr=3e-3, warmup_steps=2, log_every=5),
    "demo": dict(vocab_size=2000, d_model=128, n_layer=4, n_head=4, max_positions=1024, seq_len=128,
                 tgt_len=16, batch_size=16, max_steps=600, lr=2e-3, warmup_steps=50),
    "small": dict(vocab_size=8000, d_model=512, n_layer=8, n_head=8, max_positions=4096, seq_len=512,
                  tgt_len=64, batch_size=32, max_steps=5000, lr=6e-4, warmup_steps=200),
    "gpt2": dict(vocab_size=16000, d_model=768, n_layer=12, n_head=12, max_positions=4096, seq_len=1024,
                 tgt_len=64, batch_size=32, max_steps=20000, lr=6e-4, warmup_steps=500),
    # the synthetic tasks (paper, Section 3): bits of length 1-10, tested on 1-50; tiny models
    "synthetic": dict(task="length", head="scalar", vocab_size=3, d_model=32, n_layer=2, n_head=2, pe="nope",
                      seq_len=10, max_positions=51, batch_size=64, max_steps=600, lr=2e-3, warmup_steps=50,
                      weight_decay=0.0, alpha=0.0, divergence="l2", log_every=100),
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise OLHError(f"unknown preset '{name}'; valid: {', '.join(PRESETS)}")
    cfg = RunConfig()
    for k, v in PRESETS[name].items():
        cfg.set(k, v)
    return cfg


# Validation: every value a run starts with is checked here, before anything is written, so a bad flag
# is one `error:` line instead of a traceback (or, worse, a silently wrong run).
_DEVICES = ("auto", "cpu", "cuda")
_DTYPES = ("auto", "float32", "bfloat16")


def validate(cfg: RunConfig, registries: dict | None = None) -> RunConfig:
    """Raise OLHError naming the first bad field. `registries` maps field names to the registries
    their values must come from (trainer/train.py passes the model and alignment registries)."""
    import math

    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            sec, _ = FIELD_INDEX[key]
            raise OLHError(f"--{key} {getattr(getattr(cfg, sec), key)!r}: {why}")

    def finite(key: str, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False) -> None:
        v = getattr(getattr(cfg, FIELD_INDEX[key][0]), key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= hi \
            and (v > lo if lo_open else v >= lo)
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]".replace("inf]", "inf)")
        need(ok, key, f"must be a finite number in {rng}")

    for key, (sec, f) in FIELD_INDEX.items():  # types first: config.json files can hold anything
        v, t = getattr(getattr(cfg, sec), key), _field_type(f)
        ok = isinstance(v, t) and not (t is not bool and isinstance(v, bool)) or t is float and isinstance(v, int) \
            and not isinstance(v, bool)
        need(ok, key, f"must be {t.__name__}")
    m, d, a, t = cfg.model, cfg.data, cfg.align, cfg.train
    for key, lo in (("vocab_size", 1), ("d_model", 1), ("n_layer", 1), ("n_enc_layer", 0), ("n_head", 1),
                    ("mlp_ratio", 1), ("max_positions", 1), ("seq_len", 2), ("tgt_len", 1), ("max_steps", 1),
                    ("batch_size", 1), ("warmup_steps", 0), ("log_every", 1), ("save_every", 0), ("threads", 0),
                    ("alpha_warmup", 0), ("l_test", 0), ("seed", 0)):
        finite(key, lo)
    need(t.seed < 2 ** 32, "seed", "must be below 2**32")
    need(m.arch == "rnn" or m.d_model % m.n_head == 0, "n_head", f"must divide d_model={m.d_model}")
    finite("dropout", 0.0, 1.0)
    need(m.dropout < 1.0, "dropout", "must be below 1")
    finite("rope_base", 1.0, lo_open=True)
    finite("rope_scale", 0.0, lo_open=True)
    for key in ("alpha", "alpha_start", "hidden_weight", "lr", "weight_decay", "grad_clip"):
        finite(key, 0.0)
    finite("alpha_len_p")
    finite("min_lr_ratio", 0.0, 1.0)
    finite("extra_frac", 0.0, 1.0, lo_open=True)
    need(t.device in _DEVICES or t.device.startswith("cuda:") and t.device[5:].isdigit(), "device",
         f"valid: {', '.join(_DEVICES)}, cuda:N")
    need(t.dtype in _DTYPES, "dtype", f"valid: {', '.join(_DTYPES)}")
    need(d.tokenizer_type in ("bpe", "unigram"), "tokenizer_type", "valid: bpe, unigram")
    need(a.kl_direction in ("long_short", "short_long"), "kl_direction", "valid: long_short, short_long")
    need(bool(t.out.strip()), "out", "must name a directory")
    for key, reg in (registries or {}).items():
        sec, _ = FIELD_INDEX[key]
        reg.parse(getattr(getattr(cfg, sec), key))  # unknown name -> OLHError listing the valid ones
    return cfg
