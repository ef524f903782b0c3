"""Synthetic grids through the ablation runner (issue 8): `kind: synthetic` specs in grids/*.yaml.

    python -m trainer.ablate grids/synthetic.yaml                 # run every cell, then REPORT.md
    python -m trainer.ablate grids/synthetic.yaml --jobs 2        # two cells at a time (1 thread each)
    python -m trainer.ablate grids/synthetic.yaml --dry_run       # list the cells and exit
    python -m trainer.ablate grids/synthetic.yaml --report_only   # rebuild outputs from cells.jsonl

A synthetic grid spec:

    kind: synthetic                 # dispatches trainer.ablate here instead of the LM Grid
    name: synthetic                 # results go to <root>/<name>/ (root: --root, default runs/)
    description: ...
    base: {task: length, max_steps: 600, d_model: 32}   # SyntheticConfig / model fields (trainer.synthetic --help)
    seeds: [0, 1, 2]                # one run per cell and seed
    axes:                           # full product of the axes ...
      reparam: [identity, sqrt, log, inv_sqrt, square, cube]
      pe: [nope, rope]
    cells:                          # ... and/or an explicit list of overrides (each crossed with seeds)
      - {arch: rnn}

Every value of task/arch/pe/reparam is one registry name (no comma lists, no `all`). The runner fields
seed, seeds, workers, threads and out come from the spec's `seeds` and from --jobs/--threads/--root.

Each (cell, seed) is one training run of trainer/synthetic/run.py, keyed by a hash of its resolved config
(model + synthetic settings, without seed-independent runner settings: out, workers, threads, device,
report_lengths). A finished run is one line in <root>/<name>/cells.jsonl (its training summary and
per-length rows), so rerunning the same command skips it. From the finished runs of the current grid the
runner writes results.csv / results.jsonl (the suite's per-length rows plus cell_id and any extra axis
fields), <task>.png (error vs test length) and REPORT.md (error at the report lengths, mean ± std over
seeds, and the paired difference to the `identity` reparam).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

from trainer.ablate import combos
from trainer.config import ModelConfig, _field_type
from trainer.errors import OLHError
from trainer.models import CELLS, MODELS, POSITIONAL, ROPE_SCALING
from trainer.report import mean_std
from trainer.synthetic.regularizer import SCALAR_DIVERGENCES
from trainer.synthetic.reparam import REPARAMS
from trainer.synthetic.run import (EXTRA_KEYS, MODEL_DEFAULTS, MODEL_FLAGS, ROW_KEYS, Job, SyntheticConfig,
                                   expand_grid, plot, report_lengths, run_job, validate, write_rows)
from trainer.synthetic.tasks import TASKS

SPEC_KEYS = ("kind", "name", "description", "base", "seeds", "axes", "cells")
_TOP = "give 'seeds' at the top level of the spec"
RUNNER_FIELDS = {"seed": _TOP, "seeds": _TOP, "workers": "use --jobs", "threads": "use --threads",
                 "out": "use --root and 'name'"}
SYN_FIELDS = {f.name: f for f in fields(SyntheticConfig) if f.name not in RUNNER_FIELDS}
MODEL_FIELDS = {f.name: f for f in fields(ModelConfig) if f.name in MODEL_FLAGS}
FIELDS = {**SYN_FIELDS, **MODEL_FIELDS}
BASE_ONLY = {"report_lengths"}  # a report setting, not a factor of the runs
NAMED = {"task": TASKS, "reparam": REPARAMS, "arch": MODELS, "pe": POSITIONAL, "cell": CELLS,
         "divergence": SCALAR_DIVERGENCES, "rope_scaling": ROPE_SCALING}
HASH_SKIP = ("out", "workers", "threads", "device", "report_lengths", "seeds")
BASELINE = "identity"


# ------------------------------------------------------------------------------------------- spec
def validate_synthetic_spec(spec, where: str = "grid spec") -> dict:
    """Check a `kind: synthetic` spec; returns it normalized (values converted to their field types).
    Every problem is one OLHError line naming the key. Idempotent: a normalized spec validates again."""
    if not isinstance(spec, dict):
        raise OLHError(f"{where}: expected a mapping at the top level")
    if spec.get("kind") != "synthetic":
        raise OLHError(f"{where}: 'kind' must be synthetic for a synthetic grid, got {spec.get('kind')!r}")
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise OLHError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for a synthetic grid; "
                       f"valid: {', '.join(SPEC_KEYS)}")
    name = spec.get("name")
    if not name or not isinstance(name, str) or "/" in name:
        raise OLHError(f"{where}: 'name' is required (a plain directory name)")
    base = spec.get("base") or {}
    if not isinstance(base, dict):
        raise OLHError(f"{where}: 'base' must be a mapping of field: value")
    base = {k: _value(k, v, f"{where}: base", allow_base_only=True) for k, v in base.items()}
    axes = spec.get("axes") or {}
    if not isinstance(axes, dict):
        raise OLHError(f"{where}: 'axes' must map field names to lists of values")
    norm_axes = {}
    for k, vals in axes.items():
        _field(k, f"{where}: axes")
        if not isinstance(vals, list) or not vals:
            raise OLHError(f"{where}: axis '{k}' is empty; give it a non-empty list of values")
        norm_axes[k] = list(dict.fromkeys(_value(k, v, f"{where}: axes") for v in vals))
    cells = spec.get("cells") or []
    if not isinstance(cells, list):
        raise OLHError(f"{where}: 'cells' must be a list of mappings of field: value")
    norm_cells = []
    for i, c in enumerate(cells):
        if not isinstance(c, dict) or not c:
            raise OLHError(f"{where}: cells[{i}] must be a non-empty mapping of field: value")
        norm_cells.append({k: _value(k, v, f"{where}: cells[{i}]") for k, v in c.items()})
    if not norm_axes and not norm_cells:
        raise OLHError(f"{where}: give 'axes' or 'cells' (nothing to run)")
    seeds = spec.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise OLHError(f"{where}: 'seeds' must be a non-empty list of non-negative integers")
    desc = spec.get("description") or ""
    out = {"kind": "synthetic", "name": name, "description": str(desc).strip(), "base": base,
           "seeds": list(dict.fromkeys(seeds)), "axes": norm_axes, "cells": norm_cells}
    for ov in combos(out):  # every combination must be a valid run (reparam vs task, d_model vs n_head, ...)
        try:
            resolve(out, ov, out["seeds"][0])
        except OLHError as e:
            raise OLHError(f"{where}: cell {json.dumps(ov)}: {e}") from None
    return out


def _field(k: str, where: str, allow_base_only: bool = False) -> dataclasses.Field:
    if k in RUNNER_FIELDS:
        raise OLHError(f"{where}: '{k}' is set by the runner, not per cell ({RUNNER_FIELDS[k]})")
    if k not in FIELDS:
        raise OLHError(f"{where}: unknown field '{k}' (see python -m trainer.synthetic --help)")
    if k in BASE_ONLY and not allow_base_only:
        raise OLHError(f"{where}: '{k}' is a report setting; give it in 'base', not per cell")
    return FIELDS[k]


def _value(k: str, v, where: str, allow_base_only: bool = False):
    """v converted to field k's type, or a one-line OLHError."""
    f = _field(k, where, allow_base_only)
    t = _field_type(f)
    if k == "report_lengths" and isinstance(v, list):
        v = ",".join(str(x) for x in v)
    bad = OLHError(f"{where}: '{k}' expects {t.__name__}, got {v!r}")
    if t is bool:
        if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return v.lower() in ("true", "yes", "1", "on")
        if not isinstance(v, bool):
            raise bad
        return v
    if t in (int, float):
        if isinstance(v, bool) or isinstance(v, (list, dict)) or v is None:
            raise bad
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise bad from None
        if t is int:
            if not x.is_integer():
                raise bad
            return int(x)
        if not math.isfinite(x):
            raise bad
        return x
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise bad
    v = str(v)
    if k in NAMED:
        if "," in v or v == "all":
            raise OLHError(f"{where}: '{k}' takes one name per value, got '{v}' (list the names in an axis)")
        try:
            NAMED[k].parse(v)
        except OLHError as e:
            raise OLHError(f"{where}: {e}") from None
    return v


def resolve(spec: dict, overrides: dict, seed: int, threads: int = 1) -> tuple[Job, SyntheticConfig]:
    """The one run of (overrides, seed): suite defaults < base < overrides."""
    model = dataclasses.replace(ModelConfig(), **MODEL_DEFAULTS)
    cfg = SyntheticConfig(seed=seed, seeds=1, workers=1, threads=threads)
    for k, v in {**spec["base"], **overrides}.items():
        setattr(model if k in MODEL_FIELDS else cfg, k, v)
    validate(model, cfg)
    jobs = expand_grid(model, cfg)
    assert len(jobs) == 1, jobs  # single names per field, one seed
    return jobs[0], cfg


def run_id(job: Job, cfg: SyntheticConfig) -> str:
    """A hash of everything that determines the run's results."""
    syn = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in HASH_SKIP}
    d = {"task": job.task, "arch": job.arch, "pe": job.pe, "reparam": job.reparam, "seed": job.seed,
         "model": dataclasses.asdict(job.model), "synthetic": syn}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Cell:
    cid: str
    overrides: dict
    seed: int
    job: Job
    cfg: SyntheticConfig


def grid_cells(spec: dict, threads: int = 1) -> list[Cell]:
    """Every run of the grid in order; duplicates (e.g. rnn under several PEs) appear once."""
    out, seen = [], set()
    for ov in combos(spec):
        for s in spec["seeds"]:
            job, cfg = resolve(spec, ov, s, threads)
            cid = run_id(job, cfg)
            if cid not in seen:
                seen.add(cid)
                out.append(Cell(cid, ov, s, job, cfg))
    return out


# ------------------------------------------------------------------------------------------ running
def load_done(grid_dir: Path) -> dict[str, dict]:
    """{cell_id: record} from cells.jsonl. A line cut short by a crash is dropped (its run reruns)."""
    path = grid_dir / "cells.jsonl"
    if not path.exists():
        return {}
    done, bad = {}, 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            done[r["cell_id"]] = r
        except (json.JSONDecodeError, KeyError, TypeError):
            bad += 1
    if bad:  # rewrite without the broken line(s), so that appends start on a fresh line
        path.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    return done


def _run_cell(job: Job, cfg: SyntheticConfig) -> tuple[list[dict], dict, float]:
    t0 = time.time()
    rows, info = run_job(job, cfg)  # sets torch threads to cfg.threads
    return rows, info, time.time() - t0


def run_synthetic_grid(spec: dict, root: Path, jobs: int = 1, *, threads: int = 0, dry_run: bool = False,
                       report_only: bool = False, report: bool = True, log=print) -> Path:
    """Run a `kind: synthetic` grid into root/<name>/ (skipping finished runs), then write
    results.csv/jsonl, the plots and REPORT.md. Returns the grid directory."""
    spec = validate_synthetic_spec(spec)
    threads = threads or 1  # the suite's models are tiny: one torch thread per worker
    grid_dir = Path(root) / spec["name"]
    cells = grid_cells(spec, threads)
    done = load_done(grid_dir)
    if dry_run:
        for c in cells:
            log(f"{c.cid}  seed={c.seed}  {json.dumps(c.overrides)}{'  (done)' if c.cid in done else ''}")
        return grid_dir
    t0 = time.time()
    if not report_only:
        grid_dir.mkdir(parents=True, exist_ok=True)
        (grid_dir / "grid.json").write_text(json.dumps(spec, indent=1) + "\n")
        todo = [c for c in cells if c.cid not in done]
        log(f"grid {spec['name']}: {len(cells)} runs, {len(cells) - len(todo)} already done, {len(todo)} to run "
            f"({max(1, jobs)} job(s), {threads} thread(s) each) -> {grid_dir}")
        _run_todo(spec, grid_dir, todo, jobs, log)
        done = load_done(grid_dir)
    finished = [done[c.cid] for c in cells if c.cid in done]
    if not finished:
        raise OLHError(f"no finished runs of grid {spec['name']} in {grid_dir / 'cells.jsonl'}; "
                       f"run it without --report_only first")
    write_results(spec, grid_dir, cells, done)
    if report:
        md = write_report(spec, grid_dir, cells, done, wall_s=None if report_only else time.time() - t0)
        log(f"report: {md}")
    return grid_dir


def _run_todo(spec: dict, grid_dir: Path, todo: list[Cell], jobs: int, log) -> None:
    ledger = grid_dir / "cells.jsonl"
    errors, n = [], 0

    def finish(c: Cell, res) -> None:
        nonlocal n
        n += 1
        rows, info, wall = res
        rec = {"cell_id": c.cid, "grid": spec["name"], "overrides": c.overrides, "seed": c.seed,
               "config": {"model": dataclasses.asdict(c.job.model), "synthetic": dataclasses.asdict(c.cfg)},
               "train": info, "rows": [{**r, "cell_id": c.cid} for r in rows], "wall_s": wall}
        with open(ledger, "a") as f:  # one write per finished run: the resume point
            f.write(json.dumps(rec) + "\n")
        at = {r["length"]: r["mse"] for r in rows}
        pts = " ".join(f"mse@{x}={at[x]:.3g}" for x in report_lengths(c.cfg))
        log(f"[{n}/{len(todo)}] {c.cid} seed={c.seed} {json.dumps(c.overrides)}: loss {info['first_loss']:.3g} -> "
            f"{info['final_loss']:.3g}, {wall:.1f}s; {pts}")

    def fail(c: Cell, e: OLHError) -> None:
        errors.append(f"run {c.cid} ({json.dumps(c.overrides)}, seed {c.seed}): {e}")
        log(f"failed: {errors[-1]}")

    if jobs <= 1 or len(todo) <= 1:
        for c in todo:
            try:
                finish(c, _run_cell(c.job, c.cfg))
            except OLHError as e:
                fail(c, e)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_cell, c.job, c.cfg): c for c in todo}
            for fut in cf.as_completed(futs):
                try:
                    finish(futs[fut], fut.result())
                except OLHError as e:
                    fail(futs[fut], e)
    if errors:
        raise OLHError(f"{len(errors)} run(s) failed, the others are saved: " + "; ".join(errors))


# ------------------------------------------------------------------------------------------ outputs
def extra_fields(cells: list[Cell]) -> list[str]:
    """Override fields besides the suite's own row columns (e.g. lr, d_model): they become columns
    and split groups in the report."""
    own = set(ROW_KEYS) | set(EXTRA_KEYS)
    return sorted({k for c in cells for k in c.overrides if k not in own})


def _rows(cells: list[Cell], done: dict, extras: list[str]) -> list[dict]:
    rows = []
    for c in cells:
        if c.cid in done:
            ex = {k: getattr(c.job.model if k in MODEL_FIELDS else c.cfg, k) for k in extras}
            rows += [{**r, **ex} for r in done[c.cid]["rows"]]
    return rows


def write_results(spec: dict, grid_dir: Path, cells: list[Cell], done: dict) -> None:
    """results.csv and results.jsonl: the per-length rows of the grid's finished runs."""
    extras = extra_fields(cells)
    cols = list(ROW_KEYS) + list(EXTRA_KEYS) + extras + ["cell_id"]
    write_rows(_rows(cells, done, extras), grid_dir, cols)




def _ms(xs: list[float]) -> str:
    if not xs:
        return "—"
    m, s = mean_std(xs)
    return f"{m:.3g} ± {s:.2g}"


def write_report(spec: dict, grid_dir: Path, cells: list[Cell], done: dict, wall_s: float | None = None) -> Path:
    """REPORT.md with the error table, the paired differences to identity and the plots."""
    extras = extra_fields(cells)
    fin = [c for c in cells if c.cid in done]
    cfg0 = fin[0].cfg
    rl = report_lengths(cfg0)
    # group: the runs that differ only by seed -> {seed: {length: (mse, clamped)}}
    groups: dict[tuple, dict[int, dict[int, tuple[float, float]]]] = {}
    train_range: dict[tuple, range] = {}
    for c in fin:
        key = (c.job.task, c.job.arch, c.job.pe, tuple(str(getattr(c.job.model if k in MODEL_FIELDS else c.cfg, k))
                                                         for k in extras), c.job.reparam)
        groups.setdefault(key, {})[c.seed] = {r["length"]: (r["mse"], r["clamped"]) for r in done[c.cid]["rows"]}
        train_range[key] = range(max(c.cfg.train_min_len, c.cfg.test_min_len),
                                 min(c.cfg.train_max_len, c.cfg.test_max_len) + 1)
    ranges = set(train_range.values())
    in_label = (f"l∈[{next(iter(ranges)).start},{next(iter(ranges)).stop - 1}]" if len(ranges) == 1
                else "training lengths")
    last = rl[-1] if rl else None

    head = ["task", "arch", "pe", *extras, "reparam", "seeds", f"MSE {in_label}", *(f"MSE l={n}" for n in rl)]
    if last:
        head.append(f"clamped l={last}")
    t1 = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, by_seed in groups.items():
        t, a, p, ex, r = key
        seeds = sorted(by_seed)
        rng = [n for n in train_range[key] if all(n in by_seed[s] for s in seeds)]
        cells_ = [t, a, p, *ex, r, str(len(seeds)),
                  _ms([sum(by_seed[s][n][0] for n in rng) / len(rng) for s in seeds]) if rng else "—"]
        cells_ += [_ms([by_seed[s][n][0] for s in seeds if n in by_seed[s]]) for n in rl]
        if last:
            cl = [by_seed[s][last][1] for s in seeds if last in by_seed[s]]
            cells_.append(f"{100 * sum(cl) / len(cl):.0f} %" if cl else "—")
        t1.append("| " + " | ".join(cells_) + " |")

    # paired differences to the identity reparam of the same task/arch/pe/extras, over shared seeds
    head2 = ["task", "arch", "pe", *extras, "reparam", "seeds", *(f"ΔMSE l={n} (ratio)" for n in rl)]
    t2 = ["| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
    missing_base = 0
    for key, by_seed in groups.items():
        t, a, p, ex, r = key
        if r == BASELINE:
            continue
        base = groups.get((t, a, p, ex, BASELINE))
        if base is None:
            missing_base += 1
            continue
        seeds = sorted(set(by_seed) & set(base))
        row = [t, a, p, *ex, r, str(len(seeds))]
        for n in rl:
            ss = [s for s in seeds if n in by_seed[s] and n in base[s]]
            if not ss:
                row.append("—")
                continue
            d = [by_seed[s][n][0] - base[s][n][0] for s in ss]
            mb = sum(base[s][n][0] for s in ss) / len(ss)
            mr = sum(by_seed[s][n][0] for s in ss) / len(ss)
            row.append(f"{_ms(d)} ({mr / mb:.2g}×)" if mb > 0 else _ms(d))
        t2.append("| " + " | ".join(row) + " |")

    for stale in TASKS.names():  # a plot of an earlier grid in this directory would mislead
        (grid_dir / f"{stale}.png").unlink(missing_ok=True)
    plot_rows = []
    for (t, a, p, ex, r), by_seed in groups.items():
        label = a + (" " + ",".join(f"{k}={v}" for k, v in zip(extras, ex)) if extras else "")
        for s, by_len in by_seed.items():
            plot_rows += [{"task": t, "arch": label, "pe": p, "reparam": r, "seed": s, "length": n, "mse": m}
                          for n, (m, _) in sorted(by_len.items())]
    pngs = plot(plot_rows, cfg0, grid_dir)

    n_seeds = sorted({c.seed for c in fin})
    cell_wall = sum(done[c.cid].get("wall_s", 0.0) for c in fin)
    missing = len(cells) - len(fin)
    lines = [f"# Synthetic grid `{spec['name']}`", ""]
    if spec["description"]:
        lines += [spec["description"], ""]
    unfinished = f"; **{missing} of {len(cells)} runs not finished** (rerun the grid to complete it)"
    lines += [f"{len(fin)} runs ({len(groups)} groups × seeds {n_seeds})" + (unfinished if missing else "")
              + f". Settings: {json.dumps(spec['base'])}. Trained on l ∈ [{cfg0.train_min_len}, "
              f"{cfg0.train_max_len}], tested on l ∈ [{cfg0.test_min_len}, {cfg0.test_max_len}] "
              f"({cfg0.eval_samples} sequences per length, the same for every run).",
              "",
              f"Compute: {cell_wall:.0f} s summed over runs"
              + (f"; this invocation {wall_s:.0f} s wall." if wall_s else "."),
              "",
              "## Error by test length",
              "",
              "MSE in target space (l-space for length prediction) of f⁻¹(model output), mean ± std over seeds. "
              f"`clamped`: share of predictions at l={last} outside f⁻¹'s domain, clamped before inverting "
              "(trainer/synthetic/reparam.py).",
              "", *t1, "",
              f"## Difference to `{BASELINE}`",
              "",
              f"ΔMSE = MSE(reparam) − MSE({BASELINE}) of the same task/arch/pe, paired by seed (same test sets): "
              f"mean ± std over seeds; negative = better than {BASELINE}. In parentheses the ratio of the means.",
              ""]
    lines += t2 if len(t2) > 2 else [f"(no reparam other than {BASELINE} with a matching {BASELINE} group)"]
    if missing_base:
        lines += ["", f"{missing_base} group(s) have no matching {BASELINE} group and are left out."]
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    lines += ["", "Raw data: results.csv / results.jsonl (one row per run and test length), cells.jsonl "
              "(one line per finished run with its training summary; the resume ledger), grid.json (the spec).", ""]
    md = grid_dir / "REPORT.md"
    md.write_text("\n".join(lines))
    return md
