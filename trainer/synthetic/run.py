"""Synthetic length generalization (paper, Section 3): train on bit strings of length U{1..10}, test
on lengths 1..50, for mean and length prediction, across model families, PEs and target reparams.

    python -m trainer.synthetic --task mean --pe nope,rope --seeds 3 --out runs/syn-mean
    python -m trainer.synthetic --task length --reparam all --pe nope --out runs/syn-length
    python -m trainer.synthetic --paper --workers 2 --out runs/syn-paper     # the paper's figure

`--task/--arch/--pe/--reparam` take comma-separated lists (or `all`) and run their product; each
run is repeated for `--seeds` seeds. Writes DIR/results.csv and DIR/results.jsonl (one row per
task, arch, pe, reparam, seed, test length), DIR/<task>.png (error vs test length, training range
shaded), DIR/summary.md (error at --report_lengths, mean ± std over seeds), DIR/runs.jsonl (training
summary per run) and DIR/config.json.

Choices where the paper is silent (documented, configurable): targets are trained on the
standardized reparam f(t) (zero mean, unit variance over the training distribution;
--target_norm none trains on raw f(t)); a BOS token precedes the bits (--bos false drops it);
outputs outside f⁻¹'s domain are clamped before inverting (see reparam.py). Errors are MSE in target
space (l-space for length prediction).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from trainer.config import ModelConfig, _convert, _field_help, _field_type
from trainer.errors import OLHError
from trainer.models import CELLS, MODELS, POSITIONAL, ROPE_SCALING
from trainer.report import mean_std
from trainer.synthetic.model import POOLS, VOCAB_SIZE, ScalarModel
from trainer.synthetic.regularizer import SCALAR_DIVERGENCES, draw_extra
from trainer.synthetic.reparam import REPARAMS
from trainer.synthetic.tasks import TASKS, eval_generator, sample_bits, sample_length

ROW_KEYS = ("task", "arch", "pe", "reparam", "seed", "length", "mse")
"""The required columns of every evaluation row (issue 7)."""
EXTRA_KEYS = ("clamped", "alpha")
"""Extra columns: fraction of predictions clamped into f⁻¹'s domain; the regularizer weight."""
NO_PE = "-"
"""The `pe` of rows from models without positions (rnn)."""


@dataclass
class SyntheticConfig:
    task: str = "mean"
    """Task(s), comma-separated: mean, length."""
    reparam: str = "identity"
    """Target reparameterization(s), comma-separated or 'all'; the model learns f(target)."""
    train_min_len: int = 1
    """Shortest training length (lengths are uniform over train_min_len..train_max_len)."""
    train_max_len: int = 10
    """Longest training length."""
    test_min_len: int = 1
    """Shortest test length."""
    test_max_len: int = 50
    """Longest test length (every length in between is scored)."""
    max_steps: int = 1000
    """Optimizer steps per run (one length per step, a batch of that length)."""
    batch_size: int = 64
    """Sequences per step."""
    lr: float = 1e-3
    """Peak learning rate (AdamW, linear warm-up then cosine decay to 10 %)."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    grad_clip: float = 1.0
    """Gradient-norm clip; 0 disables."""
    seed: int = 0
    """First seed; runs use seed, seed+1, ..., seed+seeds-1 (model init and training data)."""
    seeds: int = 3
    """Seeds per grid point."""
    eval_samples: int = 256
    """Test sequences per test length."""
    eval_seed: int = 1234
    """Seed of the test sets (shared by every run, so comparisons are paired)."""
    target_norm: str = "standardize"
    """standardize: train on (f(t)-mu)/sigma with mu, sigma of f(t) over the training distribution; none: raw f(t)."""
    pool: str = "auto"
    """Scalar head reads: last position, mean over positions, first (BOS) position; auto = last (causal), mean (encdec)."""
    bos: bool = True
    """Put a BOS token before the bits."""
    alpha: float = 0.0
    """Weight of the scalar long-short misalignment regularizer; 0 = plain MSE, one view."""
    divergence: str = "l2"
    """Divergence between the long- and short-view outputs (regularizer.py)."""
    extra_frac: float = 0.5
    """Short view drops e ~ U{1..max(1, extra_frac*l)} leading bits."""
    pair_windows: bool = False
    """Train on both views even when alpha = 0 (compute-matched baseline)."""
    report_lengths: str = "10,20,50"
    """Test lengths of the summary table."""
    workers: int = 1
    """Runs trained in parallel (processes, one torch thread each)."""
    threads: int = 1
    """torch intra-op threads per run."""
    device: str = "cpu"
    """cpu or cuda."""
    out: str = "runs/synthetic"
    """Output directory."""


# Model defaults of the suite: tiny Transformers / RNNs (ModelConfig's own defaults are LM-sized).
MODEL_DEFAULTS = dict(arch="decoder", pe="nope", d_model=64, n_layer=2, n_head=4, mlp_ratio=4)
MODEL_FLAGS = ("arch", "pe", "cell", "d_model", "n_layer", "n_enc_layer", "n_head", "mlp_ratio", "dropout",
               "rope_base", "rope_scaling", "rope_scale")
GRID_AXES = ("task", "arch", "pe", "reparam")

# The paper's figure: mean prediction across PEs; length prediction across reparams, here for every
# PE and an LSTM as well (our extension). Each entry is one grid; settings are defaults that flags
# still override. 126 runs, ~530 CPU-seconds: about 5 minutes with --workers 2 on two idle CPU
# cores (9 minutes measured on a shared machine with a load of 4).
PAPER_GRIDS = [dict(task="mean", arch="decoder,rnn", pe="all", reparam="identity"),
               dict(task="length", arch="decoder,rnn", pe="all", reparam="all")]
PAPER_SETTINGS = dict(seeds=3, max_steps=600, batch_size=64, lr=2e-3, eval_samples=256, d_model=32,
                      n_layer=2, n_head=2)


@dataclass
class Job:
    task: str
    arch: str
    pe: str          # NO_PE for rnn
    reparam: str
    seed: int
    model: ModelConfig


def _split(spec: str, registry, what: str) -> list[str]:
    names = [n.split(":")[0] for n in registry.names()]
    items = names if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise OLHError(f"--{what} is empty")
    for s in items:
        registry.parse(s)  # unknown names fail with the valid list
    return list(dict.fromkeys(items))


def expand_grid(model: ModelConfig, cfg: SyntheticConfig) -> list[Job]:
    """The product of the task/arch/pe/reparam lists times the seeds; rnn ignores --pe."""
    tasks = _split(cfg.task, TASKS, "task")
    archs = _split(model.arch, MODELS, "arch")
    pes = _split(model.pe, POSITIONAL, "pe")
    reps = _split(cfg.reparam, REPARAMS, "reparam")
    jobs = []
    for t in tasks:
        for r in reps:
            _check_reparam(t, r)
            for a in archs:
                for p in (pes if a != "rnn" else [NO_PE]):
                    mc = dataclasses.replace(model, arch=a, pe=p if p != NO_PE else "nope", vocab_size=VOCAB_SIZE,
                                             max_positions=cfg.test_max_len + int(cfg.bos))
                    for s in range(cfg.seed, cfg.seed + cfg.seeds):
                        jobs.append(Job(t, a, p, r, s, mc))
    return jobs


def _check_reparam(task: str, reparam: str) -> None:
    try:
        REPARAMS.get(reparam).check_targets(TASKS.get(task).min_target)
    except OLHError as e:
        raise OLHError(f"{e} (the smallest {task} target is {TASKS.get(task).min_target:g}; "
                       f"reparam {reparam} cannot be used with --task {task})") from None


def validate(model: ModelConfig, cfg: SyntheticConfig) -> None:
    if not 1 <= cfg.train_min_len <= cfg.train_max_len:
        raise OLHError(f"need 1 <= train_min_len <= train_max_len, got {cfg.train_min_len}, {cfg.train_max_len}")
    if not 1 <= cfg.test_min_len <= cfg.test_max_len:
        raise OLHError(f"need 1 <= test_min_len <= test_max_len, got {cfg.test_min_len}, {cfg.test_max_len}")
    for name in ("max_steps", "batch_size", "seeds", "eval_samples", "workers", "threads"):
        if getattr(cfg, name) < 1:
            raise OLHError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.target_norm not in ("standardize", "none"):
        raise OLHError(f"unknown target_norm '{cfg.target_norm}'; valid: standardize, none")
    if cfg.pool not in POOLS:
        raise OLHError(f"unknown pool '{cfg.pool}'; valid: {', '.join(POOLS)}")
    if cfg.pool == "first" and not cfg.bos:
        raise OLHError("pool=first reads the BOS position; it needs --bos true")
    SCALAR_DIVERGENCES.parse(cfg.divergence)
    CELLS.parse(model.cell)
    ROPE_SCALING.parse(model.rope_scaling)
    if model.d_model % model.n_head:
        raise OLHError(f"d_model={model.d_model} is not divisible by n_head={model.n_head}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise OLHError("--device cuda requested but no CUDA device is available")
    report_lengths(cfg)


def report_lengths(cfg: SyntheticConfig) -> list[int]:
    try:
        ls = [int(x) for x in cfg.report_lengths.split(",") if x.strip()]
    except ValueError:
        raise OLHError(f"--report_lengths expects comma-separated integers, got '{cfg.report_lengths}'") from None
    return [x for x in ls if cfg.test_min_len <= x <= cfg.test_max_len]


# ------------------------------------------------------------------------------------- training
def target_stats(task: str, reparam: str, cfg: SyntheticConfig) -> tuple[float, float]:
    """(mu, sigma) of f(target) over the training distribution (every training length weighted
    equally, 1024 fixed-seed samples each); (0, 1) with --target_norm none."""
    if cfg.target_norm == "none":
        return 0.0, 1.0
    t, r = TASKS.get(task), REPARAMS.get(reparam)
    g = torch.Generator().manual_seed(987_654_321)
    ys = torch.cat([r.forward(t.target(sample_bits(g, 1024, n)))
                    for n in range(cfg.train_min_len, cfg.train_max_len + 1)])
    sd = float(ys.std())
    return float(ys.mean()), (sd if sd > 1e-12 else 1.0)


def _lr_factor(step: int, cfg: SyntheticConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))


def train_job(job: Job, cfg: SyntheticConfig) -> tuple[ScalarModel, dict]:
    """Train one model; returns it (in eval mode) and a summary with the per-step losses."""
    torch.manual_seed(job.seed)
    dev = torch.device(cfg.device)
    model = ScalarModel(job.model, cfg.pool, cfg.bos).to(dev)
    task, rp = TASKS.get(job.task), REPARAMS.get(job.reparam)
    mu, sigma = target_stats(job.task, job.reparam, cfg)
    div = SCALAR_DIVERGENCES.get(cfg.divergence)
    gen = torch.Generator().manual_seed(job.seed * 1_000_003 + 17)  # training data of this seed
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    two_views = cfg.alpha > 0 or cfg.pair_windows

    def z(bits):  # standardized reparameterized target, float32 on the device
        return ((rp.forward(task.target(bits)) - mu) / sigma).float().to(dev)

    losses, mis_hist = [], []
    t0 = time.perf_counter()
    model.train()
    for step in range(cfg.max_steps):
        n = sample_length(gen, cfg.train_min_len, cfg.train_max_len)
        bits = sample_bits(gen, cfg.batch_size, n)
        pred = model(bits.to(dev))
        fit = F.mse_loss(pred, z(bits))
        loss = fit
        e = draw_extra(gen, n, cfg.extra_frac) if two_views else 0
        if e > 0:
            short = bits[:, e:]
            pred_s = model(short.to(dev))
            fit = 0.5 * (fit + F.mse_loss(pred_s, z(short)))
            mis = div(pred, pred_s).mean()
            loss = fit + cfg.alpha * mis if cfg.alpha > 0 else fit
            mis_hist.append(mis.item())
        if not torch.isfinite(loss):
            raise OLHError(f"loss became {loss.item()} at step {step} ({job.task} {job.arch} {job.pe} "
                           f"{job.reparam} seed {job.seed}); lower --lr or use --target_norm standardize")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(fit.item())
    model.eval()
    k = max(1, min(50, len(losses) // 10))
    info = {"task": job.task, "arch": job.arch, "pe": job.pe, "reparam": job.reparam, "seed": job.seed,
            "first_loss": sum(losses[:k]) / k, "final_loss": sum(losses[-k:]) / k,
            "mis": (sum(mis_hist[-k:]) / len(mis_hist[-k:])) if mis_hist else None,
            "mu": mu, "sigma": sigma, "train_s": time.perf_counter() - t0, "losses": losses}
    return model, info


@torch.no_grad()
def evaluate(model: ScalarModel, job: Job, cfg: SyntheticConfig, mu: float, sigma: float) -> list[dict]:
    """One row per test length: MSE in target space of f⁻¹(clamp(output)) against the true target."""
    task, rp = TASKS.get(job.task), REPARAMS.get(job.reparam)
    dev = next(model.parameters()).device
    rows = []
    for n in range(cfg.test_min_len, cfg.test_max_len + 1):
        bits = sample_bits(eval_generator(cfg.eval_seed, n), cfg.eval_samples, n)
        y = model(bits.to(dev)).double().cpu() * sigma + mu
        pred, clamped = rp.to_target(y)
        mse = float((pred - task.target(bits)).pow(2).mean())
        rows.append({"task": job.task, "arch": job.arch, "pe": job.pe, "reparam": job.reparam,
                     "seed": job.seed, "length": n, "mse": mse,
                     "clamped": float(clamped.double().mean()), "alpha": cfg.alpha})
    return rows


def run_job(job: Job, cfg: SyntheticConfig) -> tuple[list[dict], dict]:
    torch.set_num_threads(cfg.threads)
    model, info = train_job(job, cfg)
    rows = evaluate(model, job, cfg, info["mu"], info["sigma"])
    return rows, info


def _run_job_args(args):
    return run_job(*args)


def run_grid(jobs: list[Job], cfg: SyntheticConfig, log=print) -> tuple[list[dict], list[dict]]:
    """Train and evaluate every job (in `cfg.workers` processes); rows and infos in job order."""
    results: list = [None] * len(jobs)
    rl = report_lengths(cfg)

    def done(i, res):
        results[i] = res
        rows, info = res
        at = {r["length"]: r["mse"] for r in rows}
        pts = " ".join(f"mse@{n}={at[n]:.3g}" for n in rl)
        log(f"[{sum(r is not None for r in results)}/{len(jobs)}] {info['task']} {info['arch']} pe={info['pe']} "
            f"reparam={info['reparam']} seed={info['seed']}: loss {info['first_loss']:.3g} -> "
            f"{info['final_loss']:.3g} in {info['train_s']:.1f}s; {pts}")

    if cfg.workers == 1 or len(jobs) == 1:
        torch.set_num_threads(cfg.threads)
        for i, j in enumerate(jobs):
            done(i, run_job(j, cfg))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp
        with cf.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_job_args, (j, cfg)): i for i, j in enumerate(jobs)}
            for f in cf.as_completed(futs):
                done(futs[f], f.result())
    rows = [r for res, _ in results for r in res]
    infos = [info for _, info in results]
    return rows, infos


# ------------------------------------------------------------------------------------- outputs
def write_rows(rows: list[dict], out: Path, cols: list[str] | None = None) -> None:
    """results.csv and results.jsonl with the given columns (default: the row schema)."""
    cols = cols or list(ROW_KEYS) + list(EXTRA_KEYS)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in cols})
    with open(out / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({k: r[k] for k in cols}) + "\n")


def _group(rows: list[dict]) -> dict:
    """{(task, arch, pe, reparam): {length: [mse per seed]}} in first-seen order."""
    g: dict = {}
    for r in rows:
        g.setdefault((r["task"], r["arch"], r["pe"], r["reparam"]), {}).setdefault(r["length"], []).append(r["mse"])
    return g



def summary_table(rows: list[dict], cfg: SyntheticConfig) -> str:
    """Markdown: MSE at each report length (and averaged over the training range), mean ± std over seeds."""
    rl = report_lengths(cfg)
    inr = range(max(cfg.train_min_len, cfg.test_min_len), min(cfg.train_max_len, cfg.test_max_len) + 1)
    head = ["task", "arch", "pe", "reparam", "seeds", f"MSE l∈[{inr.start},{inr.stop - 1}]"] + [f"MSE l={n}" for n in rl]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (t, a, p, r), by_len in _group(rows).items():
        seeds = len(next(iter(by_len.values())))
        cells = [t, a, p, r, str(seeds)]
        if len(inr):
            per_seed = [sum(by_len[n][i] for n in inr) / len(inr) for i in range(seeds)]
            m, s = mean_std(per_seed)
            cells.append(f"{m:.3g} ± {s:.2g}")
        else:
            cells.append("-")
        for n in rl:
            m, s = mean_std(by_len[n])
            cells.append(f"{m:.3g} ± {s:.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _model_label(arch: str, pe: str, multi_arch: bool) -> str:
    if pe == NO_PE:
        return arch
    return f"{arch}/{pe}" if multi_arch else f"pe={pe}"


def plot(rows: list[dict], cfg: SyntheticConfig, out: Path) -> list[Path]:
    """One PNG per task: MSE (log scale) vs test length, mean over seeds with a min-max band, the
    training range shaded. When a task's grid varies the reparam, one panel per (arch, pe)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    groups = _group(rows)
    for task in dict.fromkeys(k[0] for k in groups):
        keys = [k for k in groups if k[0] == task]
        reps = list(dict.fromkeys(k[3] for k in keys))
        models = list(dict.fromkeys((k[1], k[2]) for k in keys))
        panels = models if len(reps) > 1 and len(models) > 1 else [None]
        ncol = min(3, len(panels))
        nrow = -(-len(panels) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(6.0 * ncol, 4.4 * nrow), sharey=True, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, panel in zip(axes.flat, panels):
            sel = [k for k in keys if panel is None or (k[1], k[2]) == panel]
            for k in sel:
                lens = sorted(groups[k])
                mean = [sum(groups[k][n]) / len(groups[k][n]) for n in lens]
                lo = [min(groups[k][n]) for n in lens]
                hi = [max(groups[k][n]) for n in lens]
                parts = []
                if panel is None and len(models) > 1:
                    parts.append(_model_label(k[1], k[2], multi_arch=len({m[0] for m in models}) > 1))
                if len(reps) > 1 or not parts:
                    parts.append(k[3])
                line, = ax.plot(lens, mean, marker=".", ms=3, lw=1.4, label=" ".join(parts))
                ax.fill_between(lens, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
            ax.axvspan(cfg.train_min_len, cfg.train_max_len, color="tab:red", alpha=0.12, lw=0,
                       label=f"train lengths {cfg.train_min_len}-{cfg.train_max_len}")
            ax.set_yscale("log")
            ax.set_xlabel("test length l")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{task} prediction" + (f": {panel[0]}" + ("" if panel[1] == NO_PE else f", pe={panel[1]}")
                                                   if panel else ""))
            if ax is axes.flat[0]:
                ax.legend(fontsize=8, ncol=2)
        seeds = len(next(iter(groups[keys[0]].values())))
        for row in axes:
            row[0].set_ylabel(f"MSE ({'l-space' if task == 'length' else 'target space'}); "
                                 f"mean over {seeds} seed{'s' * (seeds > 1)}, band min-max")
        fig.tight_layout()
        p = out / f"{task}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def _versions() -> dict:
    import importlib.metadata as md
    v = {"python": sys.version.split()[0]}
    for pkg in ("torch", "numpy", "matplotlib"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return v


def run(model: ModelConfig, cfg: SyntheticConfig, grids: list[dict] | None = None, log=print) -> dict:
    """Run one grid (the task/arch/pe/reparam lists of the configs) or several (`grids`: dicts of
    those four axes, as in PAPER_GRIDS), write every output, return a summary dict."""
    t_start = time.time()
    validate(model, cfg)
    grids = grids or [dict(task=cfg.task, arch=model.arch, pe=model.pe, reparam=cfg.reparam)]
    jobs = []
    for g in grids:
        jobs += expand_grid(dataclasses.replace(model, arch=g["arch"], pe=g["pe"]),
                            dataclasses.replace(cfg, task=g["task"], reparam=g["reparam"]))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"{len(jobs)} runs ({len(jobs) // cfg.seeds} grid points x {cfg.seeds} seeds), {cfg.workers} worker(s) -> {out}")
    rows, infos = run_grid(jobs, cfg, log=log)
    write_rows(rows, out)
    with open(out / "runs.jsonl", "w") as f:
        for info in infos:
            f.write(json.dumps(info) + "\n")
    table = summary_table(rows, cfg)
    for stale in TASKS.names():  # a plot left by an earlier run in this directory would mislead
        (out / f"{stale}.png").unlink(missing_ok=True)
    pngs = plot(rows, cfg, out)
    wall = time.time() - t_start
    (out / "summary.md").write_text(f"Synthetic length generalization: MSE in target space, mean ± std over "
                                    f"{cfg.seeds} seeds; trained on l in [{cfg.train_min_len},"
                                    f"{cfg.train_max_len}]. Wall time {wall:.0f}s.\n\n" + table)
    (out / "config.json").write_text(json.dumps({"model": dataclasses.asdict(model),
                                                 "synthetic": dataclasses.asdict(cfg), "grids": grids,
                                                 "runs": len(jobs), "wall_s": wall, "versions": _versions()},
                                                indent=2) + "\n")
    log(table)
    log(f"wrote {out / 'results.csv'}, {out / 'results.jsonl'}, {out / 'summary.md'}, "
        + ", ".join(str(p) for p in pngs) + f" in {wall:.0f}s")
    return {"rows": rows, "infos": infos, "table": table, "plots": pngs, "wall_s": wall}


# ----------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    first = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="python -m trainer.synthetic", description="\n\n".join(first[:3]),
                                epilog=first[3], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", action="store_true",
                   help="run the paper's figure: mean prediction x every PE, length prediction x every "
                        "reparam x every PE, for the decoder and an LSTM; settings "
                        f"{PAPER_SETTINGS} unless given as flags")
    choices = {"task": TASKS.describe(), "reparam": REPARAMS.describe() + " (or all)",
               "arch": MODELS.describe(), "pe": POSITIONAL.describe() + " (or all)", "cell": CELLS.describe(),
               "divergence": SCALAR_DIVERGENCES.describe(), "rope_scaling": ROPE_SCALING.describe()}
    _add_fields(p.add_argument_group("synthetic config"), SyntheticConfig, None, choices, MODEL_DEFAULTS)
    _add_fields(p.add_argument_group("model config (trainer.config.ModelConfig; the suite's defaults)"),
                ModelConfig, MODEL_FLAGS, choices, MODEL_DEFAULTS)
    return p


def _add_fields(group, cls, only, choices, overrides):
    helps = _field_help(cls)
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        t = _field_type(f)
        h = helps.get(f.name, "")
        if f.name in choices:
            h += f" [{choices[f.name]}]"
        h += f" (default {overrides.get(f.name, f.default)!r})"
        h = h.replace("%", "%%")
        if t is bool:
            group.add_argument(f"--{f.name}", nargs="?", const="true", default=None, metavar="BOOL", help=h)
        else:
            group.add_argument(f"--{f.name}", default=None, metavar=t.__name__.upper(), help=h)


def config_from_args(argv: list[str] | None = None) -> tuple[ModelConfig, SyntheticConfig, list[dict] | None]:
    ns = build_parser().parse_args(argv)
    model = dataclasses.replace(ModelConfig(), **MODEL_DEFAULTS)
    cfg = SyntheticConfig()
    grids = None
    given = {k: v for k, v in vars(ns).items() if v is not None and k != "paper"}
    if ns.paper:
        clash = [k for k in GRID_AXES if k in given]
        if clash:
            raise OLHError(f"--paper fixes the grid; drop --{', --'.join(clash)} or run without --paper")
        grids = PAPER_GRIDS
        given = {**PAPER_SETTINGS, **given}
        given.setdefault("out", "runs/synthetic-paper")
    mfields = {f.name: f for f in fields(ModelConfig)}
    sfields = {f.name: f for f in fields(SyntheticConfig)}
    for k, v in given.items():
        if k in sfields:
            setattr(cfg, k, _convert(sfields[k], v))
        elif k in mfields:
            setattr(model, k, _convert(mfields[k], v))
    return model, cfg, grids


def main(argv: list[str] | None = None) -> int:
    try:
        model, cfg, grids = config_from_args(argv)
        run(model, cfg, grids)
    except OLHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
