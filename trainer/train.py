"""Train a decoder, encoder-decoder or RNN language model, with or without long-short alignment.

    python -m trainer.train --preset tiny --out runs/tiny                 # seconds on CPU
    python -m trainer.train --preset demo --arch rnn --cell gru --alpha 0 --out runs/rnn
    deepspeed --num_gpus 2 --module trainer.train --deepspeed ds_configs/zero2.json --preset tiny --out runs/ds
    python -m trainer.train --out runs/tiny --resume                      # continue a run

One loop for both backends: `--deepspeed CONFIG` goes through `deepspeed.initialize`, otherwise plain
torch. The loss comes from trainer.alignment.Objective; this file only moves data, steps the
optimizer, logs and checkpoints. Every config field is a flag (`--help` lists them with the
registered names of each ablation axis).
"""
from __future__ import annotations

if __name__ == "__main__":  # a Ctrl-C or SIGTERM during the imports below is remembered, not a traceback
    import signal as _signal

    from trainer.lifecycle import early_handler
    _signal.signal(_signal.SIGINT, early_handler)
    _signal.signal(_signal.SIGTERM, early_handler)

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.alignment import DIVERGENCES, PAIRINGS, SCHEDULES, SCOPES, TARGETS, Objective

from trainer.checkpoint import (checkpoint_dir, has_checkpoint, load_state_into, load_training_state,
                                read_weights, recover_checkpoint, save_checkpoint, truncate_metrics)
from trainer.config import PRESETS, RunConfig, validate
from trainer.flags import build_parser, config_from_namespace
from trainer.errors import CheckpointError, OLHError
from trainer.metrics import MetricsLog
from trainer.reporters import REPORTERS, Reporters
from trainer.lifecycle import (RunFinished, RunLock, StopFlag, adopt_backend, check_out_dir,
                               check_resume_state, exit_code, resume_config, resume_hint, resume_safe,
                               summary_from_log)
from trainer.models import CELLS, HEADS, MODELS, POSITIONAL, ROPE_SCALING, build_model, check_positions
from trainer.models.hf import HF_ROPE, load_pretrained
from trainer.synthetic import REPARAMS, TASKS
from trainer.synthetic import objective as synthetic


def registries(cfg: RunConfig) -> dict:
    """The registry each named config field must come from (checked before a run writes anything)."""
    hf = cfg.model.arch in MODELS and pretrained(cfg)
    return {"arch": MODELS, "pe": POSITIONAL, "cell": CELLS, "divergence": DIVERGENCES, "scope": SCOPES,
            "target": TARGETS, "alpha_schedule": SCHEDULES, "rope_scaling": HF_ROPE if hf else ROPE_SCALING,
            "head": HEADS}


def registry_choices() -> dict[str, str]:
    return {"arch": MODELS.describe(), "pe": POSITIONAL.describe(), "cell": CELLS.describe(),
            "divergence": DIVERGENCES.describe(), "scope": SCOPES.describe(), "target": TARGETS.describe(),
            "alpha_schedule": SCHEDULES.describe(),
            "rope_scaling": ROPE_SCALING.describe() + " | arch=hf: " + HF_ROPE.describe(),
            "head": HEADS.describe(), "task": "lm: next token on --data; " + TASKS.describe(),
            "reparam": REPARAMS.describe(), "pairing": PAIRINGS.describe(), "report_to": REPORTERS.describe()}


# ---------------------------------------------------------------------------------------- runtime
class Runtime:
    """Who we are (rank/world), where tensors live, and the collectives the loop needs."""

    def __init__(self, cfg: RunConfig, local_rank: int):
        self.ds = bool(cfg.train.deepspeed)
        self.ds_json = read_ds_json(cfg.train.deepspeed) if self.ds else {}
        self.zero_stage = int(self.ds_json.get("zero_optimization", {}).get("stage", 0)) if self.ds else 0
        if self.ds and not any(v in os.environ for v in ("LOCAL_RANK", "OMPI_COMM_WORLD_RANK")):
            raise OLHError("--deepspeed needs the deepspeed launcher: deepspeed --num_gpus N --module "
                           "trainer.train --deepspeed CONFIG ... (or drop --deepspeed to train with plain torch)")
        if self.ds:
            import deepspeed
            import torch.distributed as dist
            deepspeed.init_distributed()
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            from deepspeed.accelerator import get_accelerator
            acc = get_accelerator()
            lr = int(os.environ.get("LOCAL_RANK", max(local_rank, 0)))
            self.device = torch.device(acc.device_name(lr) if acc.device_name() != "cpu" else "cpu")
        else:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise OLHError(f"the deepspeed launcher started {os.environ['WORLD_SIZE']} processes but "
                               f"--deepspeed is not set; a plain torch run is one process (python -m trainer.train)")
            self.rank, self.world = 0, 1
            want = cfg.train.device
            if want == "auto":
                want = "cuda" if torch.cuda.is_available() else "cpu"
            if want.startswith("cuda") and not torch.cuda.is_available():
                raise OLHError("--device cuda requested but no CUDA device is available")
            self.device = torch.device(want)
        self.main = self.rank == 0
        want_dtype = cfg.train.dtype
        if want_dtype == "auto":
            want_dtype = "bfloat16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        if want_dtype not in ("float32", "bfloat16"):
            raise OLHError(f"unknown dtype '{want_dtype}'; valid: auto, float32, bfloat16")
        self.dtype = getattr(torch, want_dtype)

    def barrier(self):
        if self.ds:
            import torch.distributed as dist
            dist.barrier()

    def agree(self, value: int) -> int:
        """The largest `value` over all ranks (one all-reduce): every rank takes the same decision."""
        if not self.ds:
            return value
        import torch.distributed as dist
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def on_main(self, fn, share: bool = False):
        """fn() on rank 0 only; an OLHError it raises is raised on every rank (no rank waits forever
        at the next collective for one that gave up). `share`: every rank gets rank 0's result."""
        result, err = None, None
        if self.main:
            try:
                result = fn()
            except OLHError as e:
                err = e
        if self.ds:
            import torch.distributed as dist
            box = [(None if err is None else (type(err), str(err)), result if share else None)]
            dist.broadcast_object_list(box, src=0)
            if not self.main:
                result = box[0][1]
                if box[0][0] is not None:
                    err = box[0][0][0](box[0][0][1])
        if err is not None:
            raise err
        return result

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- data
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


def lr_lambda(cfg: RunConfig):
    t = cfg.train

    def f(step: int) -> float:  # multiplier of t.lr: linear warm-up, cosine decay to min_lr_ratio
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        frac = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
    return f


def make_optimizer(model: torch.nn.Module, cfg: RunConfig):
    def decays(n, p):  # matrices, not embeddings; ZeRO-3-partitioned parameters keep their shape in ds_shape
        return len(getattr(p, "ds_shape", p.shape)) >= 2 and "wte" not in n and "table" not in n
    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    other = [p for n, p in model.named_parameters() if not decays(n, p)]
    # one fused kernel on accelerators; on CPU the multi-tensor (foreach) kernel, which gives the same
    # numbers as the per-parameter loop (CPU's fused kernel rounds differently)
    dev = next(model.parameters()).device.type
    impl = {"foreach": True} if dev == "cpu" else {"fused": True}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.train.lr, betas=(0.9, 0.95), **impl)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))


def read_ds_json(path: str) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OLHError(f"cannot read DeepSpeed config {path}: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("zero_optimization", {}), dict):
        raise OLHError(f"DeepSpeed config {path} must be a JSON object (see ds_configs/)")
    return d


def ds_config(cfg: RunConfig, rt: Runtime) -> dict:
    d = dict(rt.ds_json)
    # batch sizes and clipping come from our config so one JSON serves every preset
    d["train_micro_batch_size_per_gpu"] = cfg.train.batch_size
    d["gradient_accumulation_steps"] = cfg.train.grad_accum
    d["train_batch_size"] = cfg.train.batch_size * cfg.train.grad_accum * rt.world
    d["gradient_clipping"] = cfg.train.grad_clip
    d.setdefault("steps_per_print", 10 ** 9)
    d["bf16"] = {"enabled": rt.dtype == torch.bfloat16}
    return d


def full_state_dict(module: torch.nn.Module, zero_stage: int) -> dict:
    """Unsharded weights on every rank (ZeRO-3 gathers the partitions; a collective)."""
    if zero_stage == 3:
        import deepspeed
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


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


# ------------------------------------------------------------------------------------------- main
@dataclass
class Trainer:
    """Everything one training step needs, built once by `build`."""
    cfg: RunConfig
    rt: Runtime
    out: Path
    model: torch.nn.Module
    obj: Objective
    sampler: object
    optimizer: object
    scheduler: object
    engine: object = None     # the DeepSpeed engine, or None for plain torch
    zero_stage: int = 0
    gen: torch.Generator = None  # l_extra draws, own stream so resume reproduces them
    forward: object = None       # what the objective calls: the engine, the compiled model or the model

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module if self.engine is not None else self.model


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


def model_and_tokenizer(cfg: RunConfig, rt: Runtime, out: Path, st: Start):
    """arch=hf: both from --init_from (trainer/models/hf.py; under ZeRO-3 the weights load partitioned,
    so the DeepSpeed config is needed before deepspeed.initialize). Otherwise the run's sentencepiece
    tokenizer and a fresh model, holding --init_from's weights when given."""
    if pretrained(cfg):
        return load_pretrained(cfg, out, is_main=rt.main, barrier=rt.barrier,
                               ds_config=ds_config(cfg, rt) if rt.ds else None,
                               dtype=rt.dtype if rt.ds else torch.float32)
    tok = prepare_tokenizer(cfg, st.corpus, out, rt, st.tokenizer)
    torch.manual_seed(cfg.train.seed)  # identical init on every rank
    model = build_model(cfg.model)
    if st.init_ck is not None:  # bit-exact copy of the source weights; buffers (RoPE tables) follow cfg
        load_state_into(model, read_weights(st.init_ck / "model.safetensors"), st.init_ck / "model.safetensors")
    return model, tok


def build_lm(cfg: RunConfig, rt: Runtime, out: Path, st: Start):
    """--task lm: tokenizer, token stream, model, objective and window sampler (corpus: loaded by setup)."""
    from trainer.data import WindowSampler, build_token_stream
    corpus = st.corpus
    model, tok = model_and_tokenizer(cfg, rt, out, st)
    cfg.model.vocab_size = tok.vocab_size  # sentencepiece may stop short of the request on tiny corpora
    if rt.main:  # rank 0 tokenizes and caches; the others then read the cache
        tokens = build_token_stream(corpus.train, tok, cache_path=out / "train_tokens.npy")
    rt.barrier()
    if not rt.main:
        tokens = build_token_stream(corpus.train, tok, cache_path=out / "train_tokens.npy")

    obj = Objective(cfg, model.kind, tok.bos_id)
    check_lengths(model, cfg, obj)
    return model, obj, WindowSampler(tokens, obj.window, cfg.train.batch_size, seed=cfg.train.seed, rank=rt.rank)


def build(cfg: RunConfig, rt: Runtime, out: Path, st: Start) -> Trainer:
    """The task's model, objective and sampler (a synthetic task: trainer/synthetic/objective.py; it
    has no corpus or tokenizer), then the optimizer (and DeepSpeed engine)."""
    Reporters.check(cfg.train.report_to)
    if cfg.data.task == "lm":
        model, obj, sampler = build_lm(cfg, rt, out, st)
    else:
        model, obj, sampler = synthetic.build(cfg, rt.rank)
    model.to(rt.device)
    optimizer, scheduler = make_optimizer(model, cfg)
    engine, zero_stage = None, 0
    if rt.ds:
        import deepspeed
        dsc = ds_config(cfg, rt)
        zero_stage = rt.zero_stage
        engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler, config=dsc)
    gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + rt.rank)
    forward = engine or model
    if cfg.train.compile:  # compiles the module in place: checkpoints keep their plain parameter names
        (engine or model).compile()
    return Trainer(cfg, rt, out, model, obj, sampler, optimizer, scheduler, engine, zero_stage, gen, forward)


def resume(tr: Trainer, st: Start) -> tuple[int, list[dict]]:
    """Load weights, optimizer, sampler and RNG streams from the checked checkpoint; returns the step
    to continue from and the log rows up to it (metrics.jsonl is cut back to that step)."""
    rt, ck = tr.rt, st.resume_from
    state, rng, opt_state = st.state
    step = state["step"]
    try:
        tr.sampler.load_state_dict(state["sampler"][str(rt.rank)])
        if tr.engine is not None:
            tr.engine.load_checkpoint(str(ck / "ds"), tag="state", load_module_strict=True)
        else:
            load_state_into(tr.model, read_weights(ck / "model.safetensors"), ck / "model.safetensors")
            tr.optimizer.load_state_dict(opt_state["optimizer"])
            tr.scheduler.load_state_dict(opt_state["scheduler"])
        torch.set_rng_state(rng[f"torch_{rt.rank}"])
        tr.gen.set_state(rng[f"extra_{rt.rank}"])
    except OLHError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to load a state means the checkpoint does not fit
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot resume from {ck}: {msg}") from None
    rows = rt.on_main(lambda: truncate_metrics(tr.out / "metrics.jsonl", step)) or []
    return step, rows


def save(tr: Trainer, step: int) -> None:
    """Write the checkpoint that --resume continues exactly (collective under DeepSpeed)."""
    rt, engine = tr.rt, tr.engine
    sd = full_state_dict(tr.module, tr.zero_stage)
    samplers = gather_objects(rt, tr.sampler.state_dict())
    rngs = gather_objects(rt, (torch.get_rng_state(), tr.gen.get_state()))
    rng = {f"torch_{r}": t for r, (t, _) in enumerate(rngs)} | {f"extra_{r}": g for r, (_, g) in enumerate(rngs)}
    trainer_state = {"step": step, "sampler": {str(r): s for r, s in enumerate(samplers)},
                     "world_size": rt.world, "deepspeed": rt.ds, "zero_stage": tr.zero_stage,
                     "versions": versions()}
    hf_save = getattr(tr.module, "save_pretrained", None)  # arch=hf: the HF model directory beside the state
    own_tok = tr.cfg.data.task == "lm" and not hf_save  # synthetic bits need no tokenizer; hf keeps its own
    save_checkpoint(tr.out, cfg=tr.cfg, state_dict=sd, tokenizer_path=tr.out / "tokenizer.model" if own_tok else None,
                    write_extra=(lambda d: hf_save(d / "hf", sd)) if hf_save else None,
                    trainer_state=trainer_state, rng=rng,
                    optimizer_state=None if engine else {"optimizer": tr.optimizer.state_dict(),
                                                         "scheduler": tr.scheduler.state_dict()},
                    write_ds=(lambda d: engine.save_checkpoint(str(d), tag="state")) if engine else None,
                    is_main=rt.main, barrier=rt.barrier)


def train_step(tr: Trainer, step: int) -> tuple[torch.Tensor, dict, float]:
    """One optimizer step over grad_accum micro-batches; returns (loss, objective metrics, lr used),
    the loss and metrics still on the device (mean over the micro-batches): nothing here waits for it."""
    rt, engine, optimizer, n = tr.rt, tr.engine, tr.optimizer, tr.cfg.train.grad_accum
    if engine is None:
        optimizer.zero_grad(set_to_none=True)
    total, metrics = None, {}
    for _ in range(n):
        seq = tr.sampler.next_batch().to(rt.device, non_blocking=True)
        with torch.autocast(device_type=rt.device.type, dtype=rt.dtype,
                            enabled=rt.dtype != torch.float32 and engine is None):
            loss, m = tr.obj(tr.forward, seq, step, tr.gen)
        if engine is not None:
            engine.backward(loss)  # DeepSpeed scales by 1/grad_accum and steps at the boundary
            engine.step()
        else:
            (loss / n if n > 1 else loss).backward()
        total = loss.detach() if total is None else total + loss.detach()
        for k, v in m.items():
            v = v.detach() if torch.is_tensor(v) else v
            metrics[k] = v if k not in metrics else metrics[k] + v
    if n > 1:
        total, metrics = total / n, {k: v / n for k, v in metrics.items()}
    lr_now = optimizer.param_groups[0]["lr"]
    if engine is None:
        if tr.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.cfg.train.grad_clip)
        optimizer.step()
        tr.scheduler.step()
    return total, metrics, lr_now


def write_summary(tr: Trainer, log: MetricsLog, step: int, wall_s: float) -> dict:
    summary = {"steps": step, **log.summary(), "wall_s": wall_s, "world_size": tr.rt.world, "out": str(tr.out)}
    if tr.rt.main:
        (tr.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary))
    return summary


def train(cfg: RunConfig, local_rank: int = -1, stop_at: int | None = None) -> dict:
    """Run training to cfg.train.max_steps; returns the end-of-run summary. SIGINT/SIGTERM (or `stop_at`)
    end the run early after writing a checkpoint that --resume continues exactly; the summary's
    `signal` is then the signal's number (0 otherwise)."""
    t_start = time.time()
    stop = StopFlag(under_launcher="LOCAL_RANK" in os.environ)  # set by the deepspeed launcher
    if stop.requested:  # a signal during the imports: leave before joining a process group (no rank waits)
        stop.restore()
        if os.environ.get("RANK", "0") == "0":
            print("stopped during start-up, before training; run the same command again", file=sys.stderr)
        return {"steps": 0, "signal": stop.signum}
    st = None
    try:
        st = setup(cfg, local_rank)
        cfg, rt, out = st.cfg, st.rt, st.out
        if rt.main and st.resume_from is None:  # what `--resume --out` restarts with if killed before a checkpoint
            cfg.save(out / "config.json")
        if st.finished is not None:  # killed after its last checkpoint: only the summary was missing
            if rt.main:
                (out / "summary.json").write_text(json.dumps(st.finished, indent=1) + "\n")
                print(f"note: {out} had finished; wrote its missing summary.json", file=sys.stderr)
            return {**st.finished, "signal": 0}
        signum = rt.agree(stop.poll())
        if signum:  # stopped during start-up: nothing trained, so nothing to save (the launcher kills in 30 s)
            step = st.state[0]["step"] if st.state else 0
            if rt.main:
                print(f"stopped before training (step {step}); continue with: {resume_hint(out, rt.world, rt.ds)}",
                      file=sys.stderr, flush=True)
            return {"steps": step, "signal": signum}
        tr = build(cfg, rt, out, st)
        step, rows = resume(tr, st) if st.resume_from is not None else (0, [])
        if rt.main:
            cfg.save(out / "config.json")
        log = MetricsLog(tr, step)
        log.last = rows[-1] if rows else {}
        tr.module.train()
        first = step
        while step < cfg.train.max_steps:
            signum = rt.agree(stop.poll())  # every rank stops at the same step
            if signum or step == stop_at:
                break
            t0 = time.perf_counter()
            loss, m, lr = train_step(tr, step)
            step += 1
            log.step(step, loss, m, lr, time.perf_counter() - t0)
            if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.max_steps:
                log.flush()  # every step up to a checkpoint is in metrics.jsonl before it exists
                save(tr, step)
        log.flush()
        log.bar.close()
        if step > first or st.resume_from is None:  # else the checkpoint we resumed from is this state
            save(tr, step)
        if step < cfg.train.max_steps and rt.main:
            print(f"stopped at step {step}; checkpoint saved, continue with: "
                  f"{resume_hint(out, rt.world, rt.ds)}", file=sys.stderr, flush=True)
        summary = write_summary(tr, log, step, time.time() - t_start)
        log.close()
        return {**summary, "signal": signum}
    finally:
        stop.restore()
        if st is not None and st.lock is not None:
            st.lock.release()


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


def gather_objects(rt: Runtime, obj) -> list:
    if not rt.ds:
        return [obj]
    import torch.distributed as dist
    out = [None] * rt.world
    dist.all_gather_object(out, obj)
    return out


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "deepspeed", "lm_eval", "sentencepiece", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(description=__doc__.split("\n\n")[0] + f"\n\npresets: {', '.join(PRESETS)}",
                          choices=registry_choices())
    ns = parser.parse_args(argv)
    try:
        cfg = config_from_namespace(ns)
        summary = train(cfg, ns.local_rank)
    except OLHError as e:
        if os.environ.get("RANK", "0") == "0":  # under the launcher one rank speaks for all
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return exit_code(summary["signal"])  # 130 / 143 after SIGINT / SIGTERM: `train && eval` stops


if __name__ == "__main__":
    sys.exit(main())
