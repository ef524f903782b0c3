"""Ablation runner: train every cell of a grid, score each checkpoint with lm-eval, collect one table.

    python -m trainer.ablate grids/alpha.yaml                 # train + evaluate every cell, then report
    python -m trainer.ablate grids/alpha.yaml --jobs 2        # two cells at a time
    python -m trainer.ablate grids/alpha.yaml --dry_run       # list the cells and exit
    python -m trainer.ablate grids/alpha.yaml --report_only   # rebuild the report from results.jsonl

A grid spec (YAML or JSON):

    name: alpha                     # results go to <root>/<name>/ (root: --root, default runs/)
    base: {preset: demo, max_steps: 400}    # any config field (see python -m trainer.train --help)
    seeds: [0, 1]
    axes:                           # full product of the axes ...
      alpha: [0, 0.1, 0.3]
    cells:                          # ... and/or an explicit list of overrides (each crossed with seeds)
      - {alpha: 0.1, alpha_schedule: cosine}
    eval:
      tasks: [olh_lsm, olh_ppl_len, olh_mini_lc]
      metadata: {}                  # passed to lm-eval's --metadata (l_train etc. come from the run)
    launcher: {kind: plain}         # or {kind: deepspeed, config: ds_configs/zero2.json, num_gpus: 2}
    pretrain: {seq_len: 64}         # optional: first train base+pretrain per seed, then start every
                                    # cell of that seed from it (--init_from); see grids/context_extension.yaml

Each cell is keyed by a hash of its full resolved config: a finished cell (its line in results.jsonl)
is skipped, a cell with a checkpoint but no result is evaluated, and an interrupted training resumes
from its last checkpoint, so rerunning the same command after a crash continues the grid.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from trainer.config import FIELD_INDEX, PRESETS, RunConfig, hashed_fields, preset
from trainer.errors import OLHError

SPEC_KEYS = {"name", "base", "seeds", "axes", "cells", "eval", "launcher", "description", "report", "pretrain"}
DEFAULT_TASKS = ["olh_lsm", "olh_ppl_len", "olh_mini_lc"]


# ------------------------------------------------------------------------------------------- spec
def load_spec(path: str | Path) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise OLHError(f"cannot read grid spec {p}: {e.strerror}") from None
    try:
        if p.suffix == ".json":
            spec = json.loads(text)
        else:
            import yaml
            spec = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - yaml and json raise different types; both mean "malformed"
        raise OLHError(f"grid spec {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                       f"{str(e).splitlines()[0]}") from None
    kind = spec.pop("kind", "lm") if isinstance(spec, dict) else "lm"
    if kind == "synthetic":  # synthetic length-generalization grid: trainer/synthetic/grid.py
        from trainer.synthetic.grid import validate_synthetic_spec
        return validate_synthetic_spec({**spec, "kind": kind}, str(p))
    if kind != "lm":
        raise OLHError(f"{p}: unknown grid kind {kind!r}; valid: lm (the default), synthetic")
    return validate_spec(spec, str(p))


def validate_spec(spec, where: str = "grid spec") -> dict:
    if not isinstance(spec, dict):
        raise OLHError(f"{where}: expected a mapping at the top level")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise OLHError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SPEC_KEYS))}")
    if not spec.get("name"):
        raise OLHError(f"{where}: 'name' is required")
    for sec in ("base", "eval", "launcher"):
        if spec.get(sec) is not None and not isinstance(spec[sec], dict):
            raise OLHError(f"{where}: '{sec}' must be a mapping")
    base = dict(spec.get("base") or {})
    if "preset" in base and base["preset"] not in PRESETS:
        raise OLHError(f"{where}: unknown preset '{base['preset']}'; valid: {', '.join(PRESETS)}")
    _check_fields(base, f"{where}: base", allow={"preset"})
    axes = spec.get("axes") or {}
    if not isinstance(axes, dict):
        raise OLHError(f"{where}: 'axes' must map field names to lists of values")
    for k, vals in axes.items():
        _check_fields({k: None}, f"{where}: axes")
        if not isinstance(vals, list) or not vals:
            raise OLHError(f"{where}: axis '{k}' is empty; give it a non-empty list of values")
    cells = spec.get("cells") or []
    for i, c in enumerate(cells):
        if not isinstance(c, dict):
            raise OLHError(f"{where}: cells[{i}] must be a mapping of field: value")
        _check_fields(c, f"{where}: cells[{i}]")
    if not axes and not cells:
        raise OLHError(f"{where}: give 'axes' or 'cells' (nothing to run)")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise OLHError(f"{where}: 'seeds' must be a non-empty list of integers")
    ev = dict(spec.get("eval") or {})
    bad = set(ev) - {"tasks", "metadata", "limit", "batch_size"}
    if bad:
        raise OLHError(f"{where}: unknown eval key(s) {', '.join(sorted(bad))}; valid: batch_size, limit, metadata, tasks")
    tasks = ev.get("tasks", DEFAULT_TASKS)
    if isinstance(tasks, str):  # "olh_lsm,olh_ppl_len" as on the lm-eval command line
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise OLHError(f"{where}: eval 'tasks' must be a list of task names")
    ev["tasks"] = tasks
    pretrain = spec.get("pretrain")
    if pretrain is not None:
        if not isinstance(pretrain, dict):
            raise OLHError(f"{where}: 'pretrain' must be a mapping of field: value")
        _check_fields(pretrain, f"{where}: pretrain")
    launcher = dict(spec.get("launcher") or {"kind": "plain"})
    if launcher.get("kind", "plain") not in ("plain", "deepspeed"):
        raise OLHError(f"{where}: launcher kind must be plain or deepspeed, got '{launcher.get('kind')}'")
    bad = set(launcher) - {"kind", "config", "num_gpus"}
    if bad:
        raise OLHError(f"{where}: unknown launcher key(s) {', '.join(sorted(bad))}; valid: config, kind, num_gpus")
    return {"name": str(spec["name"]), "base": base, "axes": axes, "cells": cells, "seeds": seeds,
            "eval": {"tasks": ev.get("tasks", DEFAULT_TASKS), "metadata": ev.get("metadata", {}),
                     "limit": ev.get("limit"), "batch_size": ev.get("batch_size", 8)},
            "launcher": launcher, "description": spec.get("description", ""), "report": spec.get("report", {}),
            "pretrain": pretrain}


def _check_fields(d: dict, where: str, allow=()) -> None:
    for k in d:
        if k not in FIELD_INDEX and k not in allow:
            raise OLHError(f"{where}: unknown config field '{k}' (see python -m trainer.train --help)")


def combos(spec: dict) -> list[dict]:
    """The overrides of every cell (without seeds): the product of the axes, then the explicit cells."""
    out = []
    if spec["axes"]:
        keys = list(spec["axes"])
        out += [dict(zip(keys, vals)) for vals in itertools.product(*(spec["axes"][k] for k in keys))]
    return out + [dict(c) for c in spec["cells"]]


def expand(spec: dict) -> list[dict]:
    """Every cell as {'overrides': {...}, 'seed': s}; overrides exclude the seed."""
    out, seen = [], set()
    for c in combos(spec):
        for s in spec["seeds"]:
            key = json.dumps([c, s], sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append({"overrides": c, "seed": s})
    return out


def resolve(spec: dict, cell: dict) -> RunConfig:
    base = dict(spec["base"])
    cfg = preset(base.pop("preset", "demo"))
    for k, v in {**base, **cell["overrides"], "seed": cell["seed"]}.items():
        cfg.set(k, _coerce(k, v))
    return cfg


def _coerce(key: str, v):
    """A spec value as its config field's type: YAML's `0` for a float field becomes 0.0 (else
    {alpha: 0} and {alpha: 0.0} would hash to two cells), a number for a str field becomes its text;
    lists/mappings and numbers for bool fields are rejected with the field's name."""
    from trainer.config import _field_type
    t = _field_type(FIELD_INDEX[key][1])
    if isinstance(v, str) or v is None and t is str:
        return "" if v is None else v
    ok = {bool: (bool,), int: (int,), float: (int, float), str: (int, float)}.get(t, ())
    if isinstance(v, bool) and t is not bool or not isinstance(v, ok):
        raise OLHError(f"config field '{key}' expects {t.__name__}, got {v!r}")
    return t(v) if t is not str else str(v)


def cell_id(cfg: RunConfig) -> str:
    """12 hex digits of a hash of the fields that define the cell's results and differ from the
    defaults (trainer/config.py: hashed_fields), so adding a config field keeps finished grids valid."""
    return hashlib.sha1(json.dumps(hashed_fields(cfg), sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ running
class Grid:
    def __init__(self, spec: dict, root: str | Path = "runs", threads_per_job: int = 0):
        self.spec, self.dir = spec, Path(root) / spec["name"]
        self.results = self.dir / "results.jsonl"
        self.threads = threads_per_job
        self._lock = threading.Lock()
        self._status: dict[str, tuple] = {}  # running cells: (phase, run dir, total steps)

    def done(self) -> dict[str, dict]:
        if not self.results.exists():
            return {}
        rows = {}
        for i, line in enumerate(self.results.read_text().splitlines(), 1):
            if line.strip():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    raise OLHError(f"{self.results}:{i} is not valid JSON; fix or delete that line") from None
                rows[r["cell_id"]] = r
        return rows

    def pretrain_cells(self) -> list[tuple[dict, RunConfig, str]]:
        """One pretraining run per seed (empty without a 'pretrain' section)."""
        if self.spec.get("pretrain") is None:
            return []
        out = []
        for s in self.spec["seeds"]:
            cell = {"overrides": {"stage": "pretrain", **self.spec["pretrain"]}, "seed": s}
            cfg = resolve(self.spec, {"overrides": self.spec["pretrain"], "seed": s})
            cid = "pretrain-" + cell_id(cfg)
            cfg.train.out = str(self.dir / cid)
            out.append((cell, cfg, cid))
        return out

    def cells(self) -> list[tuple[dict, RunConfig, str]]:
        pre = {cell["seed"]: (cid, cfg.train.out) for cell, cfg, cid in self.pretrain_cells()}
        out, seen = [], set()
        for cell in expand(self.spec):
            if pre:  # every cell of a seed starts from that seed's pretrained model
                pre_id, pre_out = pre[cell["seed"]]
                cell = {"overrides": {**cell["overrides"], "init_from": pre_out}, "seed": cell["seed"]}
            cfg = resolve(self.spec, cell)
            if pre:  # hash the pretraining run by its id, not its path: --root must not change cell ids
                cfg.train.init_from = pre_id
            cid = cell_id(cfg)
            if pre:
                cfg.train.init_from = pre_out
            if cid in seen:  # two spellings of one config (e.g. an axis value repeated in 'cells'): run once
                continue
            seen.add(cid)
            cfg.train.out = str(self.dir / cid)
            out.append((cell, cfg, cid))
        return out

    def run(self, jobs: int = 1, progress=True) -> list[dict]:
        from tqdm import tqdm
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "grid.json").write_text(json.dumps(self.spec, indent=1) + "\n")
        done = self.done()
        stages = [self.pretrain_cells(), self.cells()]  # pretraining first: the cells start from it
        todo = [[t for t in st if t[2] not in done] for st in stages]
        n_all, n_todo = sum(map(len, stages)), sum(map(len, todo))
        if progress:
            print(f"grid {self.spec['name']}: {n_all} runs, {n_all - n_todo} already done, {n_todo} to run")
        bar = tqdm(total=n_todo, desc=f"grid {self.spec['name']}", disable=not progress or not n_todo)
        errors = []
        stop_watch = threading.Event()
        if progress and n_todo:
            threading.Thread(target=self._watch, args=(bar, stop_watch), daemon=True).start()
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for stage in todo:
                futs = {pool.submit(self.run_cell, c, cfg, cid, jobs): cid for c, cfg, cid in stage}
                for f in as_completed(futs):
                    try:
                        f.result()
                    except OLHError as e:
                        errors.append(f"cell {futs[f]}: {e}")
                    except Exception as e:  # noqa: BLE001 - a bug in one cell must not hide the others' results
                        log = self.dir / futs[f] / "cell.log"
                        log.parent.mkdir(parents=True, exist_ok=True)
                        with open(log, "a") as fh:
                            fh.write("\n" + "".join(traceback.format_exception(e)))
                        errors.append(f"cell {futs[f]}: unexpected {type(e).__name__}: {e} (traceback in {log})")
                    bar.update(1)
                if errors:
                    break
        stop_watch.set()
        bar.close()
        if errors:
            raise OLHError("; ".join(errors))
        return list(self.done().values())

    def _watch(self, bar, stop: threading.Event) -> None:
        """Show what each running cell is doing (training step from its metrics.jsonl, or eval)."""
        while not stop.wait(2.0):
            parts = []
            for cid, (phase, out, total) in list(self._status.items()):
                if phase == "train":
                    m = out / "metrics.jsonl"
                    n = sum(1 for _ in open(m)) if m.exists() else 0
                    parts.append(f"{cid.replace('pretrain-', 'pre-')[:12]} train {n}/{total}")
                else:
                    parts.append(f"{cid.replace('pretrain-', 'pre-')[:12]} {phase}")
            bar.set_postfix_str(" | ".join(parts), refresh=True)

    def run_cell(self, cell: dict, cfg: RunConfig, cid: str, jobs: int) -> dict:
        try:
            return self._run_cell(cell, cfg, cid, jobs)
        finally:
            self._status.pop(cid, None)

    def _run_cell(self, cell: dict, cfg: RunConfig, cid: str, jobs: int) -> dict:
        t0 = time.time()
        out = Path(cfg.train.out)
        out.mkdir(parents=True, exist_ok=True)
        log = out / "cell.log"
        threads = self.threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
        summary_path = out / "summary.json"
        if _steps_done(summary_path) < cfg.train.max_steps:  # new, or stopped early (Ctrl-C writes a summary)
            cfg_path = out / "cell_config.json"
            cfg.save(cfg_path)
            resume = ["--resume"] if (out / "checkpoint").exists() else []
            self._status[cid] = ("train", out, cfg.train.max_steps)
            self._call(self._train_cmd(cfg_path, out, threads) + resume, log, "training")
            if (n := _steps_done(summary_path)) < cfg.train.max_steps:
                raise OLHError(f"training stopped at step {n} of {cfg.train.max_steps} (interrupted?); "
                               f"rerun to resume it; log: {log}")
        summary = json.loads(summary_path.read_text())
        self._status[cid] = ("lm-eval", out, 0)
        evals = self.evaluate(out, log, threads, cfg.train.device)
        row = {"cell_id": cid, "grid": self.spec["name"], "overrides": cell["overrides"], "seed": cell["seed"],
               "config": RunConfig.load(out / "checkpoint" / "config.json").to_dict(), "train": summary,
               "final_lm_loss": mean_tail(out / "metrics.jsonl", "lm_loss"), "eval": evals,
               "wall_s": time.time() - t0, "run_dir": str(out)}
        with self._lock, open(self.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def _train_cmd(self, cfg_path: Path, out: Path, threads: int) -> list[str]:
        la = self.spec["launcher"]
        args = ["--config", str(cfg_path), "--out", str(out), "--threads", str(threads)]
        if la.get("kind", "plain") == "deepspeed":
            exe = str(Path(sys.executable).parent / "deepspeed")
            return [exe, "--num_gpus", str(la.get("num_gpus", 1)), "--master_port", str(_free_port()),
                    "--module", "trainer.train", "--deepspeed", la.get("config", "ds_configs/zero2.json"), *args]
        return [sys.executable, "-m", "trainer.train", *args]

    def evaluate(self, run_dir: Path, log: Path, threads: int, device: str = "cpu") -> dict:
        """Score the checkpoint through the real lm-eval CLI (our `olharness` wrapper) and flatten the
        results to {'task/metric': value}."""
        ev = self.spec["eval"]
        if not ev["tasks"]:
            return {}
        out = run_dir / "eval"
        from trainer.models import lm_eval_model
        model, model_args = lm_eval_model(run_dir)  # ol for our families; hf-lsm on checkpoint/hf for arch=hf
        cmd = [sys.executable, "-m", "olharness.cli", "--model", model, "--model_args",
               model_args, "--tasks", ",".join(ev["tasks"]), "--batch_size", str(ev["batch_size"]),
               "--output_path", str(out)]
        if device != "auto":  # auto: the adapter picks cuda when there is one, else cpu
            cmd += ["--device", device]
        if ev["metadata"]:
            cmd += ["--metadata", json.dumps(ev["metadata"])]
        if ev["limit"]:
            cmd += ["--limit", str(ev["limit"])]
        before = set(out.rglob("results_*.json"))
        self._call(cmd, log, "evaluation", env={"OMP_NUM_THREADS": str(threads)})
        files = sorted(set(out.rglob("results_*.json")) - before, key=lambda p: p.stat().st_mtime)
        if not files:
            raise OLHError(f"lm-eval wrote no results under {out}; log: {log}")
        return flatten_results(json.loads(files[-1].read_text()))

    @staticmethod
    def _call(cmd: list[str], log: Path, what: str, env: dict | None = None) -> None:
        with open(log, "a") as fh:
            fh.write(f"\n$ {' '.join(cmd)}\n")
            fh.flush()
            start = fh.tell()
            p = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})})
        if p.returncode != 0:
            with open(log, "rb") as fh:
                fh.seek(start)
                lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            errs = [ln for ln in lines if ln.startswith("error:")]
            why = errs[-1] if errs else (f"exit {p.returncode}: {lines[-1][:300]}" if lines else f"exit {p.returncode}")
            raise OLHError(f"{what} failed ({why}); log: {log}")


def flatten_results(res: dict) -> dict:
    """lm-eval's results JSON -> {'task/metric': float}, dropping stderr entries and non-numbers."""
    flat = {}
    for task, metrics in res.get("results", {}).items():
        for key, v in metrics.items():
            if key == "alias" or "_stderr" in key or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            v = float(v)  # NaN/inf (e.g. an empty length bucket) -> None: results.jsonl stays strict JSON
            flat[f"{task}/{key.split(',')[0]}"] = v if math.isfinite(v) else None
    return flat


def mean_tail(metrics_path: Path, key: str, n: int = 20) -> float | None:
    """Mean of the last n logged values: a steadier 'final training loss' than one noisy step."""
    if not metrics_path.exists():
        return None
    vals = [json.loads(x).get(key) for x in metrics_path.read_text().splitlines() if x.strip()]
    vals = [v for v in vals if v is not None][-n:]
    return sum(vals) / len(vals) if vals else None


def _steps_done(summary_path: Path) -> int:
    """Steps a run's summary.json records (-1 without one)."""
    try:
        return int(json.loads(summary_path.read_text()).get("steps", -1))
    except (OSError, ValueError, TypeError, AttributeError):
        return -1


def _pythonpath() -> str:
    """PYTHONPATH for the cells' `python -m trainer.train / olharness.cli`: this checkout first, so they
    run the same code as the runner from any working directory, installed or not."""
    root = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.ablate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="grid spec format:\n\n" + __doc__.split("A grid spec (YAML or JSON):")[1])
    p.add_argument("spec", nargs="+", help="grid spec file(s) (YAML or JSON)")
    p.add_argument("--root", default="runs", help="where grids write (default runs/)")
    p.add_argument("--jobs", type=int, default=1, help="cells trained/evaluated at once")
    p.add_argument("--threads", type=int, default=0, help="torch threads per cell (default cores/jobs)")
    p.add_argument("--dry_run", action="store_true", help="list the cells and exit")
    p.add_argument("--report_only", action="store_true", help="only rebuild the report from results.jsonl")
    p.add_argument("--no_report", action="store_true", help="skip the report")
    args = p.parse_args(argv)
    try:
        from trainer.report import write_report
        for path in args.spec:
            spec = load_spec(path)
            if spec.get("kind") == "synthetic":
                from trainer.synthetic.grid import run_synthetic_grid
                run_synthetic_grid(spec, Path(args.root), args.jobs, threads=args.threads, dry_run=args.dry_run,
                                   report_only=args.report_only, report=not args.no_report)
                continue
            grid = Grid(spec, args.root, args.threads)
            if args.dry_run:
                done = grid.done()
                for cell, cfg, cid in grid.pretrain_cells() + grid.cells():
                    print(f"{cid}  seed={cell['seed']}  {json.dumps(cell['overrides'])}"
                          f"{'  (done)' if cid in done else ''}")
                continue
            if not args.report_only:
                grid.run(args.jobs)
            if not args.no_report:
                md = write_report(grid.dir)
                print(f"report: {md}")
    except OLHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
