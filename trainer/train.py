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

from trainer.alignment import DIVERGENCES, SCHEDULES, SCOPES, TARGETS, Objective
from safetensors.torch import load_file

from trainer.checkpoint import (checkpoint_dir, has_checkpoint, load_state_into,
                                load_training_state, save_checkpoint)
from trainer.config import PRESETS, RunConfig, build_parser, config_from_namespace, resume_conflicts
from trainer.errors import OLHError
from trainer.models import CELLS, HEADS, MODELS, POSITIONAL, ROPE_SCALING, build_model, check_positions
from trainer.models.hf import HF_ROPE, load_pretrained
from trainer.synthetic import REPARAMS, TASKS
from trainer.synthetic import objective as synthetic


def registry_choices() -> dict[str, str]:
    return {"arch": MODELS.describe(), "pe": POSITIONAL.describe(), "cell": CELLS.describe(),
            "divergence": DIVERGENCES.describe(), "scope": SCOPES.describe(), "target": TARGETS.describe(),
            "alpha_schedule": SCHEDULES.describe(),
            "rope_scaling": ROPE_SCALING.describe() + " | arch=hf: " + HF_ROPE.describe(),
            "head": HEADS.describe(), "task": "lm: next token on --data; " + TASKS.describe(),
            "reparam": REPARAMS.describe()}


# ---------------------------------------------------------------------------------------- runtime
class Runtime:
    """Who we are (rank/world), where tensors live, and the collectives the loop needs."""

    def __init__(self, cfg: RunConfig, local_rank: int):
        self.ds = bool(cfg.train.deepspeed)
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

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- data
def prepare_tokenizer(cfg: RunConfig, corpus, out: Path, rt: Runtime, init_ck: Path | None):
    """The run's tokenizer.model: reused (--tokenizer / --init_from / resume) or trained on rank 0."""
    from trainer.data import Tokenizer
    path = out / "tokenizer.model"
    src = Path(cfg.data.tokenizer) if cfg.data.tokenizer else (init_ck / "tokenizer.model" if init_ck else None)
    if rt.main and not path.exists():
        if src is not None:
            Tokenizer.load(src)  # validates before copying
            shutil.copyfile(src, path)
        else:
            Tokenizer.train(corpus.train, path, vocab_size=cfg.model.vocab_size,
                            model_type=cfg.data.tokenizer_type, seed=cfg.train.seed)
    rt.barrier()
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
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.train.lr, betas=(0.9, 0.95))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))


def ds_config(cfg: RunConfig, rt: Runtime) -> dict:
    try:
        d = json.loads(Path(cfg.train.deepspeed).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OLHError(f"cannot read DeepSpeed config {cfg.train.deepspeed}: {e}") from None
    # batch sizes and clipping come from our config so one JSON serves every preset
    d["train_micro_batch_size_per_gpu"] = cfg.train.batch_size
    d["gradient_accumulation_steps"] = 1
    d["train_batch_size"] = cfg.train.batch_size * rt.world
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


def check_lengths(model, cfg: RunConfig) -> None:
    if cfg.model.head != "lm":
        raise OLHError(f"--task lm needs --head lm, got --head {cfg.model.head}")
    if model.kind == "causal":
        check_positions(model.pe if hasattr(model, "pe") else model, cfg.data.seq_len)
    else:
        check_positions(model.pe, max(cfg.data.seq_len, cfg.data.tgt_len))
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

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module if self.engine is not None else self.model


def check_resume(cfg: RunConfig, out: Path) -> Path | None:
    """The checkpoint to resume from, or None; refuses to overwrite one or to resume a different run."""
    if has_checkpoint(out):
        if not cfg.train.resume:
            raise OLHError(f"{out} already holds a checkpoint; pass --resume to continue it or pick another --out")
        resume_from = checkpoint_dir(out)
        saved = RunConfig.load(resume_from / "config.json")
        diff = resume_conflicts(cfg, saved)  # the fields' roles in trainer/config.py say what may change
        if diff:
            raise OLHError(f"--resume with a config that differs from the checkpoint's in: {', '.join(diff)}")
        return resume_from
    if cfg.train.resume:
        print(f"note: no checkpoint in {out}; starting from step 0", file=sys.stderr)
    return None


def setup(cfg: RunConfig, local_rank: int):
    """Threads, resume check, ranks/device, --init_from architecture, the run directory."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.train.out)
    resume_from = check_resume(cfg, out)
    rt = Runtime(cfg, local_rank)
    pretrained = getattr(MODELS.get(cfg.model.arch), "pretrained", False)  # arch=hf: --init_from is the HF model
    init_ck = checkpoint_dir(cfg.train.init_from) if cfg.train.init_from and not pretrained else None
    if init_ck is not None:
        cfg = adopt_architecture(cfg, init_ck)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    rt.barrier()
    return cfg, rt, out, resume_from, init_ck


def model_and_tokenizer(cfg: RunConfig, rt: Runtime, out: Path, corpus, init_ck: Path | None):
    """arch=hf: both from --init_from (trainer/models/hf.py; under ZeRO-3 the weights load partitioned,
    so the DeepSpeed config is needed before deepspeed.initialize). Otherwise the run's sentencepiece
    tokenizer and a fresh model, holding --init_from's weights when given."""
    if getattr(MODELS.get(cfg.model.arch), "pretrained", False):
        return load_pretrained(cfg, out, is_main=rt.main, barrier=rt.barrier,
                               ds_config=ds_config(cfg, rt) if rt.ds else None,
                               dtype=rt.dtype if rt.ds else torch.float32)
    tok = prepare_tokenizer(cfg, corpus, out, rt, init_ck)
    torch.manual_seed(cfg.train.seed)  # identical init on every rank
    model = build_model(cfg.model)
    if init_ck is not None:  # bit-exact copy of the source weights; buffers (RoPE tables) follow cfg
        load_state_into(model, load_file(str(init_ck / "model.safetensors")), init_ck / "model.safetensors")
    return model, tok


def build_lm(cfg: RunConfig, rt: Runtime, out: Path, init_ck: Path | None):
    """--task lm: corpus, tokenizer, token stream, model, objective and window sampler."""
    from trainer.data import WindowSampler, build_token_stream, load_corpus
    corpus = load_corpus(cfg.data.data, seed=cfg.train.seed)
    model, tok = model_and_tokenizer(cfg, rt, out, corpus, init_ck)
    cfg.model.vocab_size = tok.vocab_size  # sentencepiece may stop short of the request on tiny corpora
    if rt.main:  # rank 0 tokenizes and caches; the others then read the cache
        tokens = build_token_stream(corpus.train, tok, cache_path=out / "train_tokens.npy")
    rt.barrier()
    if not rt.main:
        tokens = build_token_stream(corpus.train, tok, cache_path=out / "train_tokens.npy")

    obj = Objective(cfg, model.kind, tok.bos_id)
    check_lengths(model, cfg)
    return model, obj, WindowSampler(tokens, obj.window, cfg.train.batch_size, seed=cfg.train.seed, rank=rt.rank)


def build(cfg: RunConfig, rt: Runtime, out: Path, init_ck: Path | None) -> Trainer:
    """The task's model, objective and sampler (a synthetic task: trainer/synthetic/objective.py; it
    has no corpus or tokenizer), then the optimizer (and DeepSpeed engine)."""
    if cfg.data.task == "lm":
        model, obj, sampler = build_lm(cfg, rt, out, init_ck)
    else:
        model, obj, sampler = synthetic.build(cfg, rt.rank)
    model.to(rt.device)
    optimizer, scheduler = make_optimizer(model, cfg)
    engine, zero_stage = None, 0
    if rt.ds:
        import deepspeed
        dsc = ds_config(cfg, rt)
        zero_stage = int(dsc.get("zero_optimization", {}).get("stage", 0))
        engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler, config=dsc)
    gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + rt.rank)
    return Trainer(cfg, rt, out, model, obj, sampler, optimizer, scheduler, engine, zero_stage, gen)


def resume(tr: Trainer, resume_from: Path) -> int:
    """Load weights, optimizer, sampler and RNG streams; returns the step to continue from."""
    rt = tr.rt
    state, rng, opt_state = load_training_state(resume_from)
    step = state["step"]
    tr.sampler.load_state_dict(state["sampler"][str(rt.rank)] if rt.ds else state["sampler"]["0"])
    if tr.engine is not None:
        tr.engine.load_checkpoint(str(resume_from / "ds"), tag="state", load_module_strict=True)
    else:
        load_state_into(tr.model, load_file(str(resume_from / "model.safetensors")), resume_from)
        tr.optimizer.load_state_dict(opt_state["optimizer"])
        tr.scheduler.load_state_dict(opt_state["scheduler"])
    torch.set_rng_state(rng[f"torch_{rt.rank}"])
    tr.gen.set_state(rng[f"extra_{rt.rank}"])
    if rt.main:
        truncate_metrics(tr.out / "metrics.jsonl", step)
    return step


def save(tr: Trainer, step: int) -> None:
    """Write the checkpoint that --resume continues exactly (collective under DeepSpeed)."""
    rt, engine = tr.rt, tr.engine
    sd = full_state_dict(tr.module, tr.zero_stage)
    samplers = gather_objects(rt, tr.sampler.state_dict())
    rngs = gather_objects(rt, (torch.get_rng_state(), tr.gen.get_state()))
    rng = {f"torch_{r}": t for r, (t, _) in enumerate(rngs)} | {f"extra_{r}": g for r, (_, g) in enumerate(rngs)}
    trainer_state = {"step": step, "sampler": {str(r): s for r, s in enumerate(samplers)},
                     "world_size": rt.world, "versions": versions()}
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
    """One optimizer step on the next batch; returns (loss, objective metrics, lr used)."""
    rt, engine, optimizer = tr.rt, tr.engine, tr.optimizer
    seq = tr.sampler.next_batch().to(rt.device)
    with torch.autocast(device_type=rt.device.type, dtype=rt.dtype,
                        enabled=rt.dtype != torch.float32 and engine is None):
        loss, m = tr.obj(engine or tr.model, seq, step, tr.gen, sync=rt.sync)
    if not torch.isfinite(loss):
        raise OLHError(f"loss became {loss.item()} at step {step}; lower --lr or check the data")
    if engine is not None:
        engine.backward(loss)
        engine.step()
        return loss, m, optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if tr.cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.cfg.train.grad_clip)
    lr_now = optimizer.param_groups[0]["lr"]
    optimizer.step()
    tr.scheduler.step()
    return loss, m, lr_now


class MetricsLog:
    """metrics.jsonl (every step, rank 0) and the progress bar; keeps what the summary needs."""

    def __init__(self, tr: Trainer, step: int):
        from tqdm import tqdm
        cfg, rt = tr.cfg, tr.rt
        n_views = 2 if tr.obj.two_branch else 1
        view_tokens = cfg.data.seq_len + (cfg.data.tgt_len if tr.model.kind == "seq2seq" else 0)
        self.tokens_per_step = cfg.train.batch_size * view_tokens * n_views * rt.world
        self.cfg, self.tps_hist, self.last = cfg, [], {}
        self.file = open(tr.out / "metrics.jsonl", "a") if rt.main else None
        self.bar = tqdm(total=cfg.train.max_steps, initial=step, disable=not rt.main,
                        desc=f"train {cfg.model.arch}", dynamic_ncols=True, mininterval=1.0)

    def step(self, step: int, loss: torch.Tensor, m: dict, lr: float, dt: float) -> None:
        tps = self.tokens_per_step / dt
        self.tps_hist.append(tps)
        self.last = {"step": step, "loss": loss.item(), **m, "lr": lr, "tokens_per_s": tps, "step_ms": 1e3 * dt}
        if self.file:
            self.file.write(json.dumps(self.last) + "\n")
            self.file.flush()
        self.bar.update(1)
        if step % self.cfg.train.log_every == 0 or step == self.cfg.train.max_steps:
            self.bar.set_postfix(loss=f"{self.last['loss']:.4f}",
                                 **({"mis": f"{m['mis']:.3f}"} if "mis" in m else {}), tok_s=f"{tps:.0f}")

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()


def write_summary(tr: Trainer, log: MetricsLog, step: int, wall_s: float) -> dict:
    last = log.last
    summary = {"steps": step, "final_loss": last.get("loss"), "final_lm_loss": last.get("lm_loss"),
               "tokens_per_s": float(np.median(log.tps_hist)) if log.tps_hist else None,
               "wall_s": wall_s, "world_size": tr.rt.world, "out": str(tr.out)}
    if tr.rt.main:
        (tr.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary))
    return summary


def train(cfg: RunConfig, local_rank: int = -1, stop_at: int | None = None) -> dict:
    """Run training to cfg.train.max_steps; returns the end-of-run summary. Ctrl-C (SIGINT) or
    `stop_at` ends the run early after writing a checkpoint that --resume continues exactly."""
    t_start = time.time()
    cfg, rt, out, resume_from, init_ck = setup(cfg, local_rank)
    tr = build(cfg, rt, out, init_ck)
    step = resume(tr, resume_from) if resume_from is not None else 0
    if rt.main:
        cfg.save(out / "config.json")
    log = MetricsLog(tr, step)
    tr.module.train()
    stop = StopFlag()
    while step < cfg.train.max_steps and not stop.requested and step != stop_at:
        t0 = time.perf_counter()
        loss, m, lr = train_step(tr, step)
        rt.sync()
        step += 1
        log.step(step, loss, m, lr, time.perf_counter() - t0)
        if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.max_steps:
            save(tr, step)
    log.bar.close()
    stop.restore()
    save(tr, step)
    if step < cfg.train.max_steps and rt.main:
        print(f"stopped at step {step}; checkpoint saved, continue with --resume --out {out}", file=sys.stderr)
    summary = write_summary(tr, log, step, time.time() - t_start)
    log.close()
    return summary


class StopFlag:
    """First Ctrl-C asks the loop to stop after the current step (then a checkpoint is written);
    a second one interrupts immediately."""

    def __init__(self):
        import signal
        self.requested = False
        self._signal = signal
        self._old = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, nothing to restore
            self._old = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def restore(self):
        if self._old is not None:
            self._signal.signal(self._signal.SIGINT, self._old)


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


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (those steps are about to be redone)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


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
        train(cfg, ns.local_rank)
    except OLHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
