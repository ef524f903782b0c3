"""Run-level safety of a training run: where it may write, whether and how it resumes, how it stops
(SIGINT/SIGTERM: every rank agrees on the stop step, one checkpoint is written, exit 130 or 143)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from trainer.config import FIELD_INDEX, RunConfig, role
from trainer.errors import CheckpointError, OLHError


def resume_safe(key: str) -> bool:
    """May --resume change this field? Its config role says (trainer/config.py); `init_from` is
    ignored on resume (the weights come from the checkpoint), so it may differ too (a moved source)."""
    return key == "init_from" or key in FIELD_INDEX and role(key) != "setting"


# ------------------------------------------------------------------------------------- run lock
class RunLock:
    """An exclusive lock on a directory (its `.lock` file, flock'ed): a second trainer on the same
    --out, or a second grid runner on the same grid, gets a clear error instead of sharing files. The
    kernel drops the lock when the process dies, kill -9 included, so there is nothing stale to clean."""

    def __init__(self, directory: str | Path, what: str):
        self.path = Path(directory) / ".lock"
        self.what = what
        self._fh = None

    def acquire(self, wait_s: float = 0.0) -> "RunLock":
        import time
        fh = open(self.path, "a+")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    fh.close()
                    raise OLHError(f"{self.path.parent} is in use by {holder} ({self.what}); "
                                   f"wait for it to finish or pick another directory") from None
                time.sleep(0.2)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file drops the flock
            self._fh = None


# --------------------------------------------------------------------------------------- --out
def check_out_dir(out: str) -> Path:
    p = Path(out).expanduser()
    real = p.resolve()
    for bad in ("/proc", "/sys", "/dev"):
        if real == Path(bad) or Path(bad) in real.parents:
            raise OLHError(f"--out {out} is under {bad}, which cannot hold a run directory")
    if real.exists() and not real.is_dir():
        raise OLHError(f"--out {out} is an existing file, not a directory")
    try:
        real.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OLHError(f"cannot create --out {out}: {e.strerror}") from None
    if not os.access(real, os.W_OK | os.X_OK):
        raise OLHError(f"cannot write to --out {out}: permission denied")
    return p


# ------------------------------------------------------------------------------------ resume
def resume_config(cfg: RunConfig, ck: Path, from_checkpoint: bool = True) -> RunConfig:
    """The config a resumed run continues with: the one saved in `ck` (the checkpoint, or the run directory of a run
    killed before its first checkpoint), plus the resume-safe fields given on the command line (`cfg.explicit`; a config
    built in code counts every field as given). A differing field that is not resume-safe is an error naming it."""
    saved = RunConfig.load(ck / "config.json")
    explicit = getattr(cfg, "explicit", None)
    bad = []
    for key, (sec, _) in FIELD_INDEX.items():
        mine, theirs = getattr(getattr(cfg, sec), key), getattr(getattr(saved, sec), key)
        given = explicit is None or key in explicit
        if not given or mine == theirs or key == "vocab_size" and explicit is None:
            continue  # vocab_size is set from the tokenizer: a config built in code carries the request
        if resume_safe(key):
            setattr(getattr(saved, sec), key, mine)
        else:
            bad.append(f"{key} ({theirs!r} in the checkpoint, {mine!r} given)")
    if bad:
        safe = sorted(k for k in FIELD_INDEX if resume_safe(k) and k != "vocab_size")
        raise OLHError(f"--resume cannot change {', '.join(bad)}; a resumed run keeps its config except "
                       f"{', '.join(safe)}")
    saved.train.out, saved.train.resume = cfg.train.out, True
    if from_checkpoint and not (ck / "hf").is_dir():  # arch=hf still loads its model class from init_from
        saved.train.init_from = ""  # the weights come from the checkpoint
    saved.explicit = set(explicit or ())
    return saved


def adopt_backend(cfg: RunConfig) -> None:
    """`--resume` without --deepspeed continues with the backend the run was trained with: read from
    its saved config before any process group is started (the checkpoint may still need the repair
    `recover_checkpoint` does under the lock, so every place a save leaves a config.json is looked at)."""
    import json
    explicit = getattr(cfg, "explicit", None)
    if not cfg.train.resume or explicit is None or "deepspeed" in explicit:
        return
    out = Path(cfg.train.out)
    for d in ("checkpoint", "checkpoint.tmp", "checkpoint.old", "."):
        try:
            ds = json.loads((out / d / "config.json").read_text())["train"]["deepspeed"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ds and "LOCAL_RANK" not in os.environ:
            try:
                world = json.loads((out / d / "trainer_state.json").read_text())["world_size"]
            except (OSError, ValueError, KeyError, TypeError):
                world = "N"
            raise OLHError(f"{out} was trained with DeepSpeed; resume it with: {resume_hint(out, world, True)}")
        cfg.train.deepspeed = ds if isinstance(ds, str) else ""
        return


def check_resume_state(ck: Path, state, rng: dict, opt, world: int, deepspeed: bool, zero_stage: int,
                       max_steps: int) -> int:
    """Validate a checkpoint's training state against this run; returns its step."""
    where = ck / "trainer_state.json"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or isinstance(state["step"], bool) \
            or state["step"] < 0 or not isinstance(state.get("sampler"), dict):
        raise CheckpointError(f"{where} is malformed: expected an object with an integer 'step' and a 'sampler' map")
    step = state["step"]
    saved_world, saved_ds, saved_stage = state.get("world_size", 1), state.get("deepspeed"), state.get("zero_stage")
    hint = resume_hint(ck.parent, saved_world, saved_world > 1 or bool(saved_ds))
    if saved_ds is not None and bool(saved_ds) != deepspeed:
        raise OLHError(f"the checkpoint in {ck} was written {'with' if saved_ds else 'without'} DeepSpeed; "
                       f"resume it the same way: {hint}")
    if saved_world != world:
        raise OLHError(f"the checkpoint in {ck} was written by {saved_world} process(es), this run has {world}; "
                       f"resume it with: {hint}")
    if saved_stage is not None and deepspeed and saved_stage != zero_stage:
        raise OLHError(f"the checkpoint in {ck} was written with ZeRO stage {saved_stage}, --deepspeed gives "
                       f"stage {zero_stage}; resume with a stage-{saved_stage} DeepSpeed config")
    missing = [str(r) for r in range(world) if not isinstance(state["sampler"].get(str(r)), dict)]
    keys = [f"{kind}_{r}" for r in range(world) for kind in ("torch", "extra")]
    if missing or any(k not in rng for k in keys):
        raise CheckpointError(f"{ck} is malformed: sampler states or rng tensors {', '.join(keys)} are missing")
    if not deepspeed:
        if opt is None:
            raise CheckpointError(f"{ck / 'optimizer.pt'} is missing; this checkpoint can be used with "
                                  f"--init_from but not resumed")
        if not isinstance(opt, dict) or not isinstance(opt.get("optimizer"), dict) \
                or not isinstance(opt.get("scheduler"), dict):
            raise CheckpointError(f"{ck / 'optimizer.pt'} is malformed: expected optimizer and scheduler states")
    elif not (ck / "ds").is_dir():
        raise CheckpointError(f"{ck / 'ds'} (DeepSpeed's state) is missing")
    if step > max_steps:
        raise OLHError(f"the run in {ck.parent} is at step {step}, past --max_steps {max_steps}; "
                       f"pass a larger --max_steps to train further")
    if step == max_steps:
        raise RunFinished(f"the run in {ck.parent} already finished ({step} steps); pass a larger --max_steps "
                          f"to train further")
    return step


class RunFinished(OLHError):
    """--resume of a run whose checkpoint is at max_steps."""


def summary_from_log(out: Path, step: int, world: int) -> dict | None:
    """The summary of a finished run rebuilt from its metrics.jsonl, when the run was killed after its
    last checkpoint but before writing summary.json (None when summary.json is already complete)."""
    import json
    import statistics
    try:
        if json.loads((out / "summary.json").read_text()).get("steps") == step:
            return None
    except (OSError, ValueError, AttributeError):
        pass
    from trainer.checkpoint import truncate_metrics
    rows = truncate_metrics(out / "metrics.jsonl", step)
    tps = [r["tokens_per_s"] for r in rows if isinstance(r.get("tokens_per_s"), (int, float))]
    return {"steps": step, "final_loss": rows[-1].get("loss"), "final_lm_loss": rows[-1].get("lm_loss"),
            "tokens_per_s": statistics.median(tps) if tps else None,
            "wall_s": sum(r.get("step_ms", 0.0) for r in rows) / 1e3, "world_size": world, "out": str(out)}


def resume_hint(out: Path, world: int | str, deepspeed: bool) -> str:
    if deepspeed:
        return f"deepspeed --num_gpus {world} --module trainer.train --resume --out {out}"
    return f"python -m trainer.train --resume --out {out}"


# ----------------------------------------------------------------------------------- stopping
EARLY_SIGNALS: list[int] = []  # filled by the handler trainer/train.py installs before its imports


def early_handler(signum, frame) -> None:
    EARLY_SIGNALS.append(signum)


class StopFlag:
    """SIGINT/SIGTERM -> stop at the next logging step, save one checkpoint, exit 128 + signal.

    A second signal aborts a plain run at once (its last checkpoint stays valid: saves are atomic).
    Under the `deepspeed` launcher a second signal is expected (a terminal Ctrl-C reaches the workers
    and the launcher, which then sends SIGTERM) and is ignored; the launcher kills after 30 s anyway.
    Workers also stop when the launcher's parent (the `deepspeed` runner) is gone, because that runner
    does not pass signals on: killing it alone would otherwise leave the workers training."""

    def __init__(self, under_launcher: bool = False):
        self.signum = EARLY_SIGNALS[0] if EARLY_SIGNALS else 0
        self.under_launcher = under_launcher
        self.saving = False
        self._old = {}
        self._watch = _launcher_parent() if under_launcher else None
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread (a test calling train()): no handlers
            self._old = {}

    def _handle(self, signum, frame):
        if not self.signum:
            self.signum = signum
            print(f"\n{signal.Signals(signum).name}: stopping at the next logging step and saving a checkpoint"
                  f"{'' if self.under_launcher else ' (again to abort)'}", file=sys.stderr, flush=True)
        elif not self.under_launcher:
            print(f"{signal.Signals(signum).name} again: aborted without saving; the last checkpoint is kept",
                  file=sys.stderr, flush=True)
            os._exit(128 + self.signum)

    def poll(self) -> int:
        """This process's stop request (a signal number, 0 for none)."""
        if not self.signum and self._watch is not None and _ppid(self._watch[0]) != self._watch[1]:
            self.signum = signal.SIGTERM
            print("the deepspeed runner is gone: saving a checkpoint and stopping", file=sys.stderr, flush=True)
        return self.signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _launcher_parent() -> tuple[int, int] | None:
    """(launcher pid, its parent's pid) when this worker was started by deepspeed's launch.py."""
    launcher = os.getppid()
    try:
        cmd = Path(f"/proc/{launcher}/cmdline").read_bytes()
    except OSError:
        return None
    runner = _ppid(launcher)
    return (launcher, runner) if b"deepspeed.launcher.launch" in cmd and runner and runner > 1 else None


class GridInterrupted(OLHError):
    """The runner got SIGINT/SIGTERM: running cells saved a checkpoint, queued ones never started."""

    def __init__(self, signum: int, msg: str = "interrupted"):
        super().__init__(msg)
        self.signum = signum


class GridStopper:
    """Ctrl-C / SIGTERM for the grid runner. Children run in their own sessions, so a Ctrl-C at the
    terminal reaches only the runner, which passes the signal once to every running child (a trainer
    then saves a checkpoint and exits); cells not yet started are skipped. Children also get SIGTERM
    if the runner dies (kill -9 included), so no trainer goes on alone."""

    # run by the child between fork and exec: parent-death signal, then exec the real command
    _WRAP = ("import ctypes,os,signal,sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
             "os.getppid() == int(sys.argv[1]) or sys.exit(143); os.execvp(sys.argv[2], sys.argv[2:])")

    def __init__(self):
        self.signum = 0
        self._procs: set = set()
        self._mu = threading.Lock()

    @contextlib.contextmanager
    def handling(self):
        self.signum = 0
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _handle(self, signum, frame):
        if not self.signum:
            self.signum = signum
            print(f"\ninterrupt: stopping the running cells (they save a checkpoint); no new cell starts",
                  file=sys.stderr)
        with self._mu:
            procs = list(self._procs)
        for p in procs:  # once per signal received; a trainer ignores repeats while it saves
            try:
                os.killpg(p.pid, signum)
            except ProcessLookupError:
                pass

    def check(self) -> None:
        if self.signum:
            raise GridInterrupted(self.signum)

    def popen(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        self.check()
        wrapped = [sys.executable, "-c", self._WRAP, str(os.getpid()), *cmd]
        p = subprocess.Popen(wrapped, start_new_session=True, **kw)
        with self._mu:
            self._procs.add(p)
        try:
            p.wait()
        finally:
            with self._mu:
                self._procs.discard(p)
        return subprocess.CompletedProcess(cmd, p.returncode)


GRID_STOP = GridStopper()  # the grid runner's (trainer/ablate.py)
