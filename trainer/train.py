"""Train a decoder, encoder-decoder or RNN language model, with or without long-short alignment.

    python -m trainer.train --preset tiny --out runs/tiny                 # seconds on CPU
    python -m trainer.train --preset demo --arch rnn --cell gru --alpha 0 --out runs/rnn
    deepspeed --num_gpus 2 --module trainer.train --deepspeed ds_configs/zero2.json --preset tiny --out runs/ds
    python -m trainer.train --out runs/tiny --resume                      # continue a run

One loop for both backends: `--deepspeed CONFIG` goes through `deepspeed.initialize`, otherwise plain torch. The loss
comes from trainer.alignment.Objective; this file only moves data, steps the optimizer, logs and checkpoints. Every
config field is a flag (`--help` lists them with the registered names of each ablation axis)."""
from __future__ import annotations

if __name__ == "__main__":  # a Ctrl-C or SIGTERM during the imports below is remembered, not a traceback
    import signal as _signal
    from trainer.lifecycle import early_handler
    _signal.signal(_signal.SIGINT, early_handler)
    _signal.signal(_signal.SIGTERM, early_handler)

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.alignment import Objective
from trainer.checkpoint import load_state_into, read_weights, save_checkpoint, truncate_metrics
from trainer.config import PRESETS, RunConfig
from trainer.errors import CheckpointError, OLHError
from trainer.flags import build_parser, config_from_namespace
from trainer.lifecycle import StopFlag, resume_hint
from trainer.metrics import MetricsLog
from trainer.models import build_model
from trainer.reporters import Reporters
from trainer.runtime import Runtime, ds_config, full_state_dict, gather_objects, versions
from trainer.start import (Start, check_lengths, checked, load_pretrained, prepare_tokenizer, pretrained,
                           registry_choices, setup)
from trainer.synthetic import objective as synthetic


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
    # one fused kernel per step (CPU too: its rounding moves the golden losses by < 2e-6, as the per-parameter
    # loop's does; tests/test_golden.py)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.train.lr, betas=(0.9, 0.95), fused=True)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))


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
    model, tok = model_and_tokenizer(cfg, rt, out, st)
    cfg.model.vocab_size = tok.vocab_size  # sentencepiece may stop short of the request on tiny corpora
    if rt.main:  # rank 0 tokenizes and caches; the others then read the cache
        tokens = build_token_stream(st.corpus.train, tok, cache_path=out / "train_tokens.npy")
    rt.barrier()
    if not rt.main:
        tokens = build_token_stream(st.corpus.train, tok, cache_path=out / "train_tokens.npy")

    obj = Objective(cfg, model.kind, tok.bos_id)
    check_lengths(model, cfg, obj)
    return model, obj, WindowSampler(tokens, obj.window, cfg.train.batch_size, seed=cfg.train.seed, rank=rt.rank)


def build(cfg: RunConfig, rt: Runtime, out: Path, st: Start) -> Trainer:
    """The task's model, objective and sampler (a synthetic task: trainer/synthetic/objective.py; it
    has no corpus or tokenizer), then the optimizer (and DeepSpeed engine)."""
    Reporters.check(cfg.train.report_to)
    model, obj, sampler = build_lm(cfg, rt, out, st) if cfg.data.task == "lm" else synthetic.build(cfg, rt.rank)
    model.to(rt.device)
    optimizer, scheduler = make_optimizer(model, cfg)
    engine, zero_stage = None, 0
    if rt.ds:
        import deepspeed
        zero_stage = rt.zero_stage
        engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler, config=ds_config(cfg, rt))
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
    return step, rt.on_main(lambda: truncate_metrics(tr.out / "metrics.jsonl", step)) or []


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
            torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.cfg.train.grad_clip, foreach=True)
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
    """Run training to cfg.train.max_steps; returns the end-of-run summary. SIGINT/SIGTERM end the run
    at the next logging step (`stop_at`: at that step) after writing a checkpoint that --resume
    continues exactly; the summary's `signal` is then the signal's number (0 otherwise)."""
    t_start = time.time()
    stop = StopFlag(under_launcher="LOCAL_RANK" in os.environ)  # set by the deepspeed launcher
    if stop.signum:  # a signal during the imports: leave before joining a process group (no rank waits)
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
            if step % cfg.train.log_every == 0:  # every rank stops at the same logging step: the log reads
                signum = rt.agree(stop.poll())   # the device there anyway, so the all-reduce adds no host sync
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(description=__doc__.split("\n\n")[0] + f"\n\npresets: {', '.join(PRESETS)}",
                          choices=registry_choices())
    ns = parser.parse_args(argv)
    try:
        summary = train(config_from_namespace(ns), ns.local_rank)
    except OLHError as e:
        if os.environ.get("RANK", "0") == "0":  # under the launcher one rank speaks for all
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    finally:  # under DeepSpeed: shut the process group's backend down before the interpreter tears down
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    # 130 / 143 after SIGINT / SIGTERM: `train && eval` stops
    return 128 + summary["signal"] if summary["signal"] else 0


if __name__ == "__main__":
    sys.exit(main())
