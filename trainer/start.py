"""Everything a run does before its first step: the checked config, the run directory and its lock, resume and
--init_from, the tokenizer, the early length checks."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.alignment import DIVERGENCES, PAIRINGS, SCHEDULES, SCOPES, TARGETS, Objective
from trainer.checkpoint import (checkpoint_dir, has_checkpoint, load_training_state, read_weights,
                                recover_checkpoint)
from trainer.config import RunConfig, validate
from trainer.data.hf_tokenizer import HFTokenizer
from trainer.errors import CheckpointError, OLHError
from trainer.lifecycle import (RunFinished, RunLock, adopt_backend, check_out_dir, check_resume_state,
                               resume_config, resume_safe, summary_from_log)
from trainer.models import CELLS, HEADS, MODELS, POSITIONAL, ROPE_SCALING, build_model, check_positions
from trainer.models.hf import HF_ROPE, HFCausalLM, load_config
from trainer.reporters import REPORTERS
from trainer.runtime import Runtime
from trainer.synthetic import REPARAMS, TASKS
from trainer.synthetic import objective as synthetic


_NAMED = {"arch": MODELS, "pe": POSITIONAL, "cell": CELLS, "divergence": DIVERGENCES, "scope": SCOPES, "target": TARGETS,
          "alpha_schedule": SCHEDULES}


def registries(cfg: RunConfig) -> dict:
    """The registry each named config field must come from (checked before a run writes anything)."""
    hf = cfg.model.arch in MODELS and pretrained(cfg)
    return {**_NAMED, "rope_scaling": HF_ROPE if hf else ROPE_SCALING, "head": HEADS}


def registry_choices() -> dict[str, str]:
    """The registered names of each named field, for --help."""
    return {**{k: r.describe() for k, r in _NAMED.items()}, "head": HEADS.describe(), "pairing": PAIRINGS.describe(),
            "rope_scaling": ROPE_SCALING.describe() + " | arch=hf: " + HF_ROPE.describe(),
            "task": "lm: next token on --data; " + TASKS.describe(), "reparam": REPARAMS.describe(),
            "report_to": REPORTERS.describe()}


def prepare_tokenizer(cfg: RunConfig, corpus, out: Path, rt: Runtime, src: Path | None):
    """The run's tokenizer.model: copied from `src` (--tokenizer, --init_from's or the resumed
    checkpoint's) or trained on rank 0. A tokenizer.model left in --out by an earlier failed run is
    reused only if it was made from the same inputs (tokenizer.model.key.json records them)."""
    from trainer.data import Tokenizer
    path, key_path = out / "tokenizer.model", out / "tokenizer.model.key.json"

    def make():
        key = {"source_sha256": hashlib.sha256(src.read_bytes()).hexdigest()} if src is not None else \
            {"data": cfg.data.data, "vocab_size": cfg.model.vocab_size, "type": cfg.data.tokenizer_type,
             "seed": cfg.train.seed}
        try:  # a resumed run asks for the size the tokenizer reached (sentencepiece may stop short)
            old = json.loads(key_path.read_text())
            reached = old.pop("reached", None)
            if path.exists() and (old == key or {**old, "vocab_size": reached} == key):
                return
        except (OSError, ValueError, AttributeError):
            pass
        key_path.unlink(missing_ok=True)
        if src is not None:
            Tokenizer.load(src)  # validates before copying
            shutil.copyfile(src, path)
        else:
            tok = Tokenizer.train(corpus.train, path, vocab_size=cfg.model.vocab_size,
                                  model_type=cfg.data.tokenizer_type, seed=cfg.train.seed)
            key["reached"] = tok.vocab_size
        key_path.write_text(json.dumps(key) + "\n")
    rt.on_main(make)
    return Tokenizer.load(path)


def check_lengths(model, cfg: RunConfig, obj: Objective) -> None:
    if cfg.model.head != "lm":
        raise OLHError(f"--task lm needs --head lm, got --head {cfg.model.head}")
    what = "seq_len" if obj.views.longest == cfg.data.seq_len else f"the longest {cfg.align.pairing} view"
    if model.kind == "causal":
        check_positions(model.pe if hasattr(model, "pe") else model, obj.views.longest, what)
    else:
        check_positions(model.pe, max(obj.views.longest, cfg.data.tgt_len), what)
        if cfg.data.tgt_len < 1 or cfg.data.tgt_len >= cfg.data.seq_len:
            raise OLHError(f"tgt_len={cfg.data.tgt_len} must be in [1, seq_len={cfg.data.seq_len})")


@dataclass
class Start:
    """What start-up decided: the config to train, where, from which checkpoint (and its state)."""
    cfg: RunConfig
    rt: Runtime
    out: Path
    lock: RunLock | None
    resume_from: Path | None = None
    state: tuple | None = None  # (trainer_state, rng, optimizer state) of resume_from
    init_ck: Path | None = None
    finished: dict | None = None  # the summary of a finished run whose summary.json a kill prevented
    corpus: object = None
    tokenizer: Path | None = None  # the tokenizer.model to copy (None: train one)


def open_run_dir(cfg: RunConfig, rt: Runtime) -> RunLock:
    """Rank 0: create --out, take its lock, repair an interrupted save; a run without a checkpoint
    starts over, so an earlier failed run's log and summary are dropped."""
    out = check_out_dir(cfg.train.out)
    lock = RunLock(out, "a trainer").acquire()
    try:
        note = recover_checkpoint(out)
        if note:
            print(f"note: {out}: {note}", file=sys.stderr)
        if not has_checkpoint(out):
            for f in ("metrics.jsonl", "summary.json"):
                (out / f).unlink(missing_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock


def checked(cfg: RunConfig) -> RunConfig:
    return validate(cfg, registries(cfg))


def pretrained(cfg: RunConfig) -> bool:
    """arch=hf: a pretrained model family whose weights and tokenizer come from --init_from."""
    return getattr(MODELS.get(cfg.model.arch), "pretrained", False)


def preflight(cfg: RunConfig) -> None:
    """Build the model on the meta device (no memory, no RNG) and the objective, so that what only
    they check (head sizes, position limits, schedules) fails before data is loaded or written."""
    with torch.device("meta"):
        model = build_model(cfg.model)
    check_lengths(model, cfg, Objective(cfg, model.kind, 1))


def setup(cfg: RunConfig, local_rank: int) -> Start:
    """Validate, find ranks, lock and repair --out, adopt the resumed run's config (or --init_from's
    architecture) and check the resumed checkpoint: every bad input fails here, before training."""
    checked(cfg)
    adopt_backend(cfg)
    rt = Runtime(cfg, local_rank)
    st = Start(cfg, rt, Path(cfg.train.out), rt.on_main(lambda: open_run_dir(cfg, rt)))
    try:
        if has_checkpoint(st.out):
            if not cfg.train.resume:
                raise OLHError(f"{st.out} already holds a checkpoint; pass --resume to continue it or pick another --out")
            st.resume_from = checkpoint_dir(st.out)
            st.cfg = checked(resume_config(cfg, st.resume_from))
            state, rng, opt = load_training_state(st.resume_from)
            try:
                check_resume_state(st.resume_from, state, rng, opt, rt.world, rt.ds, rt.zero_stage,
                                   st.cfg.train.max_steps)
            except RunFinished:
                st.finished = rt.on_main(lambda: summary_from_log(st.out, state["step"], rt.world), share=True)
                if st.finished is None:
                    raise
                return st
            st.state = (state, rng, opt)
        else:
            if cfg.train.resume and (st.out / "config.json").is_file():  # killed before its first checkpoint
                st.cfg = cfg = checked(resume_config(cfg, st.out, from_checkpoint=False))
                print(f"note: no checkpoint in {st.out} yet; restarting its run from step 0", file=sys.stderr)
            elif cfg.train.resume and all(resume_safe(k) for k in getattr(cfg, "explicit", ["a setting"])):
                raise OLHError(f"nothing to resume in {st.out}: no checkpoint and no config.json; start the "
                               f"run again with its flags")
            elif cfg.train.resume:
                print(f"note: no checkpoint in {st.out}; starting from step 0", file=sys.stderr)
            if cfg.train.init_from and not pretrained(cfg):  # arch=hf: --init_from is the HF model
                st.init_ck = checkpoint_dir(cfg.train.init_from)
                st.cfg = checked(adopt_architecture(cfg, st.init_ck))
                read_weights(st.init_ck / "model.safetensors")  # a truncated file fails now, not after data
        if st.cfg.train.threads:  # the resumed run's own setting when not given again
            torch.set_num_threads(st.cfg.train.threads)
        if st.cfg.data.task == "lm" and not pretrained(st.cfg):  # arch=hf brings its own (trainer/models/hf.py)
            preflight(st.cfg)
            src = st.resume_from or st.init_ck
            st.tokenizer = src / "tokenizer.model" if src else Path(st.cfg.data.tokenizer) if st.cfg.data.tokenizer \
                else None
            if st.tokenizer is not None and not st.tokenizer.is_file():
                raise OLHError(f"tokenizer {st.tokenizer} does not exist")
        if st.finished is None and st.cfg.data.task == "lm":  # synthetic tasks generate their data
            from trainer.data import load_corpus
            st.corpus = load_corpus(st.cfg.data.data, seed=st.cfg.train.seed)
    except BaseException:
        if st.lock is not None:
            st.lock.release()
        raise
    return st


def adopt_architecture(cfg: RunConfig, ck: Path) -> RunConfig:
    """--init_from: the architecture and tokenizer come from the source checkpoint; only the fields a
    context extension may change (position scaling, max_positions, dropout) may differ. A conflicting
    architecture flag given on the command line is an error, not silently overridden."""
    src = RunConfig.load(ck / "config.json")
    keep = {"rope_scaling", "rope_scale", "max_positions", "dropout"}
    explicit = getattr(cfg, "explicit", set())
    for k, v in vars(src.model).items():
        if k in keep:
            continue
        if k in explicit and getattr(cfg.model, k) != v:
            raise OLHError(f"--init_from {ck.parent if ck.name == 'checkpoint' else ck} has {k}={v}, "
                           f"but --{k} {getattr(cfg.model, k)} was given; the architecture comes from the checkpoint")
        setattr(cfg.model, k, v)
    if src.model.arch == "encdec":
        cfg.data.tgt_len = src.data.tgt_len
    if cfg.data.tokenizer:
        raise OLHError("--init_from takes the checkpoint's tokenizer; drop --tokenizer")
    return cfg


def resolve_source(init_from: str, out: Path, is_main: bool, barrier) -> str:
    """The HF model to start from. One of our own runs is accepted too: an arch=hf run continues
    from its checkpoint/hf; a native decoder/rnn run is first exported with olharness.export_hf into
    OUT/init_hf (custom code, so --trust_remote_code is needed to load it)."""
    if not init_from:
        raise OLHError("--arch hf needs --init_from DIR_OR_HUB_NAME (a Hugging Face causal LM)")
    try:
        ck = checkpoint_dir(init_from)
        run_model = json.loads((ck / "config.json").read_text()).get("model")
    except (CheckpointError, OSError, json.JSONDecodeError, AttributeError):
        return str(init_from)  # an HF directory or a hub name
    if not isinstance(run_model, dict) or "arch" not in run_model:
        return str(init_from)
    if run_model["arch"] == "hf":
        return str(ck / "hf")
    dest = Path(out) / "init_hf"
    if is_main and not (dest / "config.json").exists():
        from olharness.export_hf import export  # lm-eval's registry etc. only for this path
        export(ck, dest)
    barrier()
    return str(dest)


def load_pretrained(cfg, out: Path, *, is_main: bool = True, barrier=lambda: None,
                    ds_config: dict | None = None, dtype: torch.dtype = torch.float32):
    """(HFCausalLM, HFTokenizer) for `--arch hf --init_from SOURCE`; the tokenizer travels with the
    model so that checkpoints save both."""
    source = resolve_source(cfg.train.init_from, out, is_main, barrier)
    load_config(source, cfg.model.trust_remote_code)  # refuses custom code before anything runs it
    tok = HFTokenizer.load(source, cfg.model.trust_remote_code)
    model = HFCausalLM.load(source, cfg.model, cfg.data.seq_len, ds_config=ds_config, dtype=dtype)
    model.tokenizer = tok
    return model, tok
