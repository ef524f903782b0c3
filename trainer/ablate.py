"""Ablation runner: train every cell of a grid, score each checkpoint, collect results.jsonl and the report.

    python -m trainer.ablate grids/alpha.yaml [--jobs 2 | --dry_run | --report_only]

The spec format is in trainer/spec.py. A cell is keyed by a hash of its non-default settings: a
finished cell is skipped, a trained one is evaluated, an interrupted one resumes from its checkpoint,
so rerunning the same command after a crash continues the grid."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from trainer.config import RunConfig
from trainer.errors import OLHError
from trainer.lifecycle import GRID_STOP as _STOP, GridInterrupted, RunLock
from trainer.results import ResultRow, append_row, flatten_results, mean_tail, read_rows, scored_with
from trainer.spec import GridSpec, cell_id, combos, load_spec, resolve


# ------------------------------------------------------------------------------------------ running
class Grid:
    def __init__(self, spec: GridSpec, root: str | Path = "runs", threads_per_job: int = 0):
        self.spec, self.dir = spec, Path(root) / spec.name
        self.results = self.dir / "results.jsonl"
        self.threads = threads_per_job
        self._lock = threading.Lock()
        self._status: dict[str, tuple] = {}  # running cells: (phase, run dir, total steps)
        self._pool, self._jobs = None, 1  # worker processes for synthetic cells, started on first use

    def done(self) -> dict[str, ResultRow]:
        """Finished rows by cell id. A row written when ids hashed every field (before the field roles
        in trainer/config.py) is also keyed by today's id of its saved config, so it stays done."""
        rows = read_rows(self.results)
        pre = {Path(r.run_dir).name: "pretrain-" + cell_id(RunConfig.from_dict(r.config))
               for r in rows.values() if r.is_pretrain}
        for r in list(rows.values()):
            cfg = RunConfig.from_dict(r.config)
            cfg.train.init_from = pre.get(Path(cfg.train.init_from).name, cfg.train.init_from)
            rows.setdefault(("pretrain-" if r.is_pretrain else "") + cell_id(cfg), r)
        return rows

    def pretrain_cells(self) -> list[tuple[dict, RunConfig, str]]:
        """One pretraining run per seed (empty without a 'pretrain' section)."""
        if self.spec.pretrain is None:
            return []
        out = []
        for s in self.spec.seeds:
            cell = {"overrides": {"stage": "pretrain", **self.spec.pretrain}, "seed": s}
            cfg = resolve(self.spec, self.spec.pretrain, s)
            cid = "pretrain-" + cell_id(cfg)
            cfg.train.out = str(self.dir / cid)
            out.append((cell, cfg, cid))
        return out

    def cells(self) -> list[tuple[dict, RunConfig, str]]:
        pre = {cell["seed"]: (cid, cfg.train.out) for cell, cfg, cid in self.pretrain_cells()}
        out, seen = [], set()
        for ov, seed in ((c, s) for c in combos(self.spec) for s in self.spec.seeds):
            pre_id, pre_out = pre.get(seed, (None, None))  # every cell of a seed starts from its pretrained model
            cell = {"overrides": {**ov, "init_from": pre_out} if pre else ov, "seed": seed}
            # the id hashes a pretraining run by its id, not its path: --root must not change cell ids
            cfg = resolve(self.spec, {**ov, "init_from": pre_id} if pre else ov, seed)
            cid = cell_id(cfg)
            if pre:
                cfg.train.init_from = pre_out
            if cid in seen:  # two spellings of one config (an axis value repeated in 'cells', 0 and 0.0): run once
                continue
            seen.add(cid)
            cfg.train.out = str(self.dir / cid)
            out.append((cell, cfg, cid))
        return out

    def run(self, jobs: int = 1, progress=True) -> list[ResultRow]:
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.dir, "a grid runner").acquire()
        try:
            with _STOP.handling():
                return self._run(jobs, progress)
        finally:
            lock.release()

    def _run(self, jobs: int, progress: bool) -> list[ResultRow]:
        from tqdm import tqdm
        (self.dir / "grid.json").write_text(self.spec.model_dump_json(indent=1) + "\n")
        done = self.done()
        stages = [self.pretrain_cells(), self.cells()]  # pretraining first: the cells start from it
        todo = [[t for t in st if t[2] not in done] for st in stages]
        n_all, n_todo = sum(map(len, stages)), sum(map(len, todo))
        if progress:
            print(f"grid {self.spec.name}: {n_all} runs, {n_all - n_todo} already done, {n_todo} to run")
        bar = tqdm(total=n_todo, desc=f"grid {self.spec.name}", disable=not progress or not n_todo)
        errors, self._jobs = [], max(1, jobs)
        stop_watch = threading.Event()
        if progress and n_todo:
            threading.Thread(target=self._watch, args=(bar, stop_watch), daemon=True).start()
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for stage in todo:
                futs = {pool.submit(self.run_cell, c, cfg, cid, jobs): cid for c, cfg, cid in stage}
                for f in as_completed(futs):
                    try:
                        f.result()
                    except GridInterrupted:
                        pass
                    except OLHError as e:
                        errors.append(f"cell {futs[f]}: {e}")
                    except Exception as e:  # noqa: BLE001 - a bug in one cell must not hide the others' results
                        log = self.dir / futs[f] / "cell.log"
                        log.parent.mkdir(parents=True, exist_ok=True)
                        with open(log, "a") as fh:
                            fh.write("\n" + "".join(traceback.format_exception(e)))
                        errors.append(f"cell {futs[f]}: unexpected {type(e).__name__}: {e} (traceback in {log})")
                    bar.update(1)
                if errors or _STOP.signum:
                    break
        stop_watch.set()
        bar.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if _STOP.signum:
            raise GridInterrupted(_STOP.signum, f"interrupted: {len(self.done())} of {n_all} runs finished; "
                                                f"rerun the same command to continue")
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
                    phase = f"train {sum(1 for _ in open(m)) if m.exists() else 0}/{total}"
                parts.append(f"{cid.replace('pretrain-', 'pre-')[:12]} {phase}")
            bar.set_postfix_str(" | ".join(parts), refresh=True)

    def run_cell(self, cell: dict, cfg: RunConfig, cid: str, jobs: int) -> dict:
        try:
            return self._run_cell(cell, cfg, cid, jobs)
        finally:
            self._status.pop(cid, None)

    def _run_cell(self, cell: dict, cfg: RunConfig, cid: str, jobs: int) -> dict:
        t0 = time.time()
        _STOP.check()  # interrupted: queued cells do not start
        out = Path(cfg.train.out)
        out.mkdir(parents=True, exist_ok=True)
        # a trainer of this cell left by a killed runner saves and exits on its own (SIGTERM from
        # _call's parent-death signal); wait for it to let go of the run directory
        RunLock(out, "a trainer").acquire(wait_s=120).release()
        log = out / "cell.log"
        threads = self.threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
        summary_path = out / "summary.json"
        if _steps_done(summary_path) < cfg.train.max_steps:  # new, or stopped early (Ctrl-C writes a summary)
            cfg_path = out / "cell_config.json"
            cfg.save(cfg_path)
            resume = ["--resume"] if (out / "checkpoint").exists() else []
            self._status[cid] = ("train", out, cfg.train.max_steps)
            if cfg.data.task != "lm" and self.spec.launcher.kind == "plain":  # seconds-long runs: no new interpreter
                self._train_in_pool(cfg, out, threads, log, bool(resume))
            else:
                self._call(self._train_cmd(cfg_path, out, threads) + resume, log, "training")
            _STOP.check()
            if (n := _steps_done(summary_path)) < cfg.train.max_steps:
                raise OLHError(f"training stopped at step {n} of {cfg.train.max_steps} (interrupted?); "
                               f"rerun to resume it; log: {log}")
        summary = json.loads(summary_path.read_text())
        self._status[cid] = ("eval", out, 0)
        if cfg.data.task == "lm":
            evals, divs = self.evaluate(out, log, threads, cfg.train.device)
        else:  # synthetic tasks: every test length, in process (a tiny model, seconds)
            from trainer.checkpoint import load_model
            from trainer.synthetic.objective import evaluate
            evals, divs = evaluate(*load_model(out)[:2]), {}
        lm_loss = mean_tail(out / "metrics.jsonl", "lm_loss")
        _STOP.check()
        row = ResultRow(cell_id=cid, grid=self.spec.name, overrides=cell["overrides"], seed=cell["seed"],
                        config=RunConfig.load(out / "checkpoint" / "config.json").to_dict(), train=summary,
                        final_lm_loss=lm_loss, eval=evals, scored_with=divs, wall_s=time.time() - t0,
                        run_dir=str(out))
        with self._lock:
            append_row(self.results, row)
        return row

    def _train_in_pool(self, cfg: RunConfig, out: Path, threads: int, log: Path, resume: bool) -> None:
        """Train in one of the grid's worker processes (started once, each imports torch once)."""
        with self._lock:
            if self._pool is None:
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor
                self._pool = ProcessPoolExecutor(self._jobs, mp_context=mp.get_context("spawn"))
        cfg = RunConfig.from_dict(cfg.to_dict())
        cfg.train.out, cfg.train.threads, cfg.train.resume = str(out), threads, resume
        err = self._pool.submit(_train_here, cfg.to_dict(), str(log)).result()
        if err:
            raise OLHError(f"training failed (error: {err}); log: {log}")

    def _train_cmd(self, cfg_path: Path, out: Path, threads: int) -> list[str]:
        la = self.spec.launcher
        args = ["--config", str(cfg_path), "--out", str(out), "--threads", str(threads)]
        if la.kind == "deepspeed":
            exe = str(Path(sys.executable).parent / "deepspeed")
            return [exe, "--num_gpus", str(la.num_gpus), "--master_port", str(_free_port()),
                    "--module", "trainer.train", "--deepspeed", la.config, *args]
        return [sys.executable, "-m", "trainer.train", *args]

    def evaluate(self, run_dir: Path, log: Path, threads: int, device: str = "cpu") -> tuple[dict, dict]:
        """Score the checkpoint through the real lm-eval CLI (our `olharness` wrapper) and flatten the
        results to {'task/metric': value}."""
        ev = self.spec.eval
        if not ev.tasks:
            return {}, {}
        out = run_dir / "eval"
        from trainer.checkpoint import lm_eval_model  # torch etc. only when a grid scores
        model, model_args = lm_eval_model(run_dir)  # ol for our families; hf-lsm on checkpoint/hf for arch=hf
        cmd = [sys.executable, "-m", "olharness.cli", "--model", model, "--model_args",
               model_args, "--tasks", ",".join(ev.tasks), "--batch_size", str(ev.batch_size),
               "--output_path", str(out)]
        if device != "auto":  # auto: the adapter picks cuda when there is one, else cpu
            cmd += ["--device", device]
        if ev.metadata:
            cmd += ["--metadata", json.dumps(ev.metadata)]
        if ev.limit:
            cmd += ["--limit", str(ev.limit)]
        before = set(out.rglob("results_*.json"))
        self._call(cmd, log, "evaluation", env={"OMP_NUM_THREADS": str(threads)})
        files = sorted(set(out.rglob("results_*.json")) - before, key=lambda p: p.stat().st_mtime)
        if not files:
            raise OLHError(f"lm-eval wrote no results under {out}; log: {log}")
        res = json.loads(files[-1].read_text())
        return flatten_results(res), scored_with(res)

    @staticmethod
    def _call(cmd: list[str], log: Path, what: str, env: dict | None = None) -> None:
        with open(log, "a") as fh:
            fh.write(f"\n$ {' '.join(cmd)}\n")
            fh.flush()
            start = fh.tell()
            p = _STOP.popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})})
        _STOP.check()
        if p.returncode != 0:
            with open(log, "rb") as fh:
                fh.seek(start)
                lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            errs = [ln for ln in lines if ln.startswith("error:")]
            why = errs[-1] if errs else (f"exit {p.returncode}: {lines[-1][:300]}" if lines else f"exit {p.returncode}")
            raise OLHError(f"{what} failed ({why}); log: {log}")


def _train_here(cfg: dict, log: str) -> str | None:
    """A grid worker process: train one cell, its output appended to the cell's log; the error line or None."""
    from trainer.train import train
    sys.stdout.flush(), sys.stderr.flush()
    with open(log, "a") as fh:
        os.dup2(fh.fileno(), 1), os.dup2(fh.fileno(), 2)
        try:
            train(RunConfig.from_dict(cfg))
        except OLHError as e:
            print(f"error: {e}", file=sys.stderr)
            return str(e)
        finally:
            sys.stdout.flush(), sys.stderr.flush()
    return None


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
    from trainer import spec as spec_module
    p = argparse.ArgumentParser(prog="python -m trainer.ablate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="grid spec format:\n\n" + spec_module.__doc__.split("\n\n", 1)[1])
    p.add_argument("spec", nargs="+", help="grid spec file(s) (YAML or JSON)")
    p.add_argument("--root", default="runs", help="where grids write (default runs/)")
    p.add_argument("--jobs", type=int, default=1, help="cells trained/evaluated at once")
    p.add_argument("--threads", type=int, default=0, help="torch threads per cell (default cores/jobs)")
    p.add_argument("--dry_run", action="store_true", help="list the cells and exit")
    p.add_argument("--report_only", action="store_true", help="only rebuild the report from results.jsonl")
    p.add_argument("--no_report", action="store_true", help="skip the report")
    args = p.parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:  # Ctrl-C before the grid's own handlers are installed (loading specs)
        print("interrupted", file=sys.stderr)
        return 130


def _main(args) -> int:
    try:
        from trainer.report import write_report
        for path in args.spec:
            grid = Grid(load_spec(path), args.root, args.threads)
            if args.dry_run:
                done = grid.done()
                for cell, cfg, cid in grid.pretrain_cells() + grid.cells():
                    print(f"{cid}  seed={cell['seed']}  {json.dumps(cell['overrides'])}"
                          f"{'  (done)' if cid in done else ''}")
                continue
            if not args.report_only:
                grid.run(args.jobs)
            if not args.no_report:
                print(f"report: {write_report(grid.dir)}")
    except GridInterrupted as e:
        print(str(e), file=sys.stderr)
        return 128 + e.signum
    except OLHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
