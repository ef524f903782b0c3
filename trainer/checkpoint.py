"""Checkpoints: safetensors weights + config + tokenizer + trainer state, written atomically.

RUN_DIR/checkpoint/ holds the files the README lists; model.safetensors has the gathered fp32 weights,
optimizer.pt only tensors (read with weights_only=True), and arch=hf has hf/ (save_pretrained weights,
config and tokenizer, what lm-eval's hf models load) instead of tokenizer.model.

A save writes checkpoint.tmp/ (trainer_state.json last), renames checkpoint/ -> checkpoint.old/ and
checkpoint.tmp/ -> checkpoint/, then deletes checkpoint.old/; whatever a kill leaves,
`recover_checkpoint` keeps the newest complete checkpoint at the next start."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainer.config import RunConfig
from trainer.data.tokenizer import Tokenizer
from trainer.errors import CheckpointError, OLHError
from trainer.models import MODELS, build_model

REQUIRED = ("config.json", "model.safetensors")


def _tokenizer_file(ck: Path) -> tuple[str, ...]:
    """The tokenizer a checkpoint needs: its own, or arch=hf's directory; none for a synthetic task."""
    try:
        task = json.loads((ck / "config.json").read_text()).get("data", {}).get("task", "lm")
    except (OSError, ValueError, AttributeError):
        task = "lm"
    return ("tokenizer.model|hf",) if task == "lm" else ()  # a|b: either one


def checkpoint_dir(path: str | Path) -> Path:
    """Accept a run directory or its checkpoint/ directory; fail clearly if neither holds one."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no checkpoint: {p} does not exist")
    ck = p / "checkpoint" if (p / "checkpoint").is_dir() else p if (p / "model.safetensors").exists() else None
    if ck is None:
        raise CheckpointError(f"no checkpoint in {p}: expected {p}/checkpoint/ or {p}/model.safetensors")
    missing = [f.replace("|", " or ") for f in REQUIRED + _tokenizer_file(ck)
               if not any((ck / x).exists() for x in f.split("|"))]
    if missing:
        raise CheckpointError(f"checkpoint {ck} is incomplete: missing {', '.join(missing)}")
    return ck


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "checkpoint" / "model.safetensors").exists()


def recover_checkpoint(run_dir: str | Path) -> str | None:
    """Repair what a kill during `save_checkpoint` left behind; returns a note of what was done.

    checkpoint.old/ exists only once checkpoint.tmp/ is complete, so with checkpoint/ missing a complete checkpoint.tmp/
    is the newest checkpoint (killed between the two renames); otherwise checkpoint.old/ is put back. Leftover temp/old
    directories are then deleted. Call it on one process, holding the run's lock."""
    run_dir = Path(run_dir)
    final, tmp, old = run_dir / "checkpoint", run_dir / "checkpoint.tmp", run_dir / "checkpoint.old"
    note = None
    if not final.exists():
        if old.exists() and (tmp / "trainer_state.json").is_file():  # written last: the save is complete
            os.replace(tmp, final)
            note = "a save was interrupted between its renames: took the new checkpoint.tmp"
        elif old.exists():
            os.replace(old, final)
            note = "a save was interrupted: put checkpoint.old back"
    for d in (tmp, old):
        if d.exists():
            shutil.rmtree(d)
    if note:
        _fsync_path(run_dir)
    return note


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt checkpoint file {path}: {e}") from None


def load_state_into(model: torch.nn.Module, sd: dict, where: Path) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"weights in {where} do not fit the model in its config.json: "
                              f"{first[1].strip() if len(first) > 1 else first[0]}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, RunConfig, Tokenizer or None for a synthetic task) from a run or checkpoint directory."""
    ck = checkpoint_dir(path)
    cfg = RunConfig.load(ck / "config.json")
    if (ck / "hf").is_dir():
        raise CheckpointError(f"{ck} holds a Hugging Face model (arch=hf): load {ck / 'hf'} with "
                              f"transformers or score it with lm_eval --model hf")
    try:
        model = build_model(cfg.model)
    except OLHError as e:
        raise CheckpointError(f"config.json in {ck} names an unusable model: {e}") from None
    load_state_into(model, read_weights(ck / "model.safetensors"), ck / "model.safetensors")
    tok = Tokenizer.load(ck / "tokenizer.model") if cfg.data.task == "lm" else None
    return model.to(device).eval(), cfg, tok


def save_checkpoint(run_dir: Path, *, cfg: RunConfig, state_dict: dict, tokenizer_path: Path | None,
                    trainer_state: dict, rng: dict[str, torch.Tensor], optimizer_state: dict | None,
                    write_ds=None, write_extra=None, is_main: bool = True, barrier=lambda: None) -> Path:
    """Write a complete checkpoint to a temp dir and swap it in. `write_ds(dir)` lets every rank
    write DeepSpeed's sharded state (a collective) into the temp dir before rank 0 swaps;
    `write_extra(dir)` (rank 0) adds files beside the state, e.g. arch=hf's save_pretrained directory."""
    run_dir = Path(run_dir)
    final, tmp = run_dir / "checkpoint", run_dir / "checkpoint.tmp"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    if write_ds is not None:
        write_ds(tmp / "ds")
    if is_main:
        cfg.save(tmp / "config.json")
        if tokenizer_path is not None:
            shutil.copyfile(tokenizer_path, tmp / "tokenizer.model")
        if write_extra is not None:
            write_extra(tmp)
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()},
                  str(tmp / "model.safetensors"))
        save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / "optimizer.pt")
        _fsync_tree(tmp)
        fault_point("save-files", trainer_state["step"])
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1) + "\n")  # the "complete" mark
        _fsync_tree(tmp)
        old = run_dir / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        fault_point("save-complete", trainer_state["step"])
        if final.exists():
            os.replace(final, old)
        fault_point("save-between-renames", trainer_state["step"])
        os.replace(tmp, final)
        _fsync_path(run_dir)
        fault_point("save-before-cleanup", trainer_state["step"])
        shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def fault_point(name: str, step: int) -> None:
    """Fault injection for tests/test_faults.py: OLH_FAULT=NAME@STEP makes this process kill -9 itself
    at that point of the save (or metrics cut) of that step, the worst moments for a crash."""
    if os.environ.get("OLH_FAULT") == f"{name}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(d: Path) -> None:
    for f in [d, *d.rglob("*")]:
        _fsync_path(f)


# --------------------------------------------------------------------------------- metrics log
def truncate_metrics(path: Path, step: int) -> list[dict]:
    """Keep the log lines of steps 1..step (the checkpoint we resume from; later steps are about to be
    redone) and return them. A torn last line (killed mid-write) is dropped. The file is rewritten
    through a temp file and a rename, so a kill here leaves the old or the new log, never a mix."""
    path = Path(path)
    rows = []
    if path.exists():
        for ln in path.read_text(errors="replace").splitlines():
            try:
                r = json.loads(ln)
            except json.JSONDecodeError:
                continue  # a line torn by a kill; its step is redone
            if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= step:
                rows.append(r)
    rows = [r for i, r in enumerate(rows) if r["step"] == i + 1]  # one line per step, in order
    if len(rows) != step:
        raise CheckpointError(f"{path} holds {len(rows)} of the {step} steps the checkpoint in {path.parent} "
                              f"has trained; the log was edited or lost (restore it, or start a new --out)")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
        fh.flush()
        os.fsync(fh.fileno())
    fault_point("metrics-cut", step)
    os.replace(tmp, path)
    return rows


def load_training_state(ck: Path) -> tuple[dict, dict, dict | None]:
    """(trainer_state, rng tensors, optimizer state or None) of a checkpoint, read without pickle code execution."""
    try:
        state = json.loads((ck / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"corrupt or missing {ck / 'trainer_state.json'}: {e}") from None
    rng = read_weights(ck / "rng.safetensors")
    opt = None
    if (ck / "optimizer.pt").exists():
        try:
            opt = torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"corrupt checkpoint file {ck / 'optimizer.pt'}: {why}") from None
    return state, rng, opt


def lm_eval_model(run_dir) -> tuple[str, str]:
    """(lm-eval model name, model_args) that score a trained run: `ol` on the run directory, unless
    its family says otherwise (arch=hf: `hf-lsm` on the saved Hugging Face directory)."""
    ck = checkpoint_dir(run_dir)
    mcfg = RunConfig.load(ck / "config.json").model
    family = MODELS.get(mcfg.arch)
    if hasattr(family, "lm_eval_args"):
        return family.lm_eval_args(ck, mcfg)
    return "ol", f"pretrained={run_dir}"
