"""Where a run executes: ranks, device and dtype, DeepSpeed's config and collectives, library versions."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from trainer.config import RunConfig
from trainer.errors import OLHError


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
            _unlink_shm_buffer(self.rank)
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
        if self.device.type == "cpu":
            keep_freed_memory()
        want_dtype = cfg.train.dtype  # auto, float32 or bfloat16 (trainer/config.py: validate)
        if want_dtype == "auto":
            want_dtype = "bfloat16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
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
        t = torch.tensor([value], dtype=torch.int64, device=self.device)  # NCCL reduces device tensors only
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


def _unlink_shm_buffer(rank: int) -> None:
    """DeepSpeed's CPU backend gives each rank a 69 MB shared-memory buffer that every rank maps at init
    (deepspeed/ops/csrc/cpu/comm/shm.cpp) and nobody unlinks: each run, killed or not, would leave them
    in /dev/shm until the machine runs out of memory. Once all ranks have mapped them (the barrier),
    the names are not needed, and the mappings live on until the processes exit."""
    import torch.distributed as dist
    path = Path("/dev/shm") / (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
                               f"{os.environ.get('MASTER_PORT', '')}_{rank}")
    dist.barrier()  # on every rank (whether or not it has a buffer), so no rank waits alone
    path.unlink(missing_ok=True)


def read_ds_json(path: str) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OLHError(f"cannot read DeepSpeed config {path}: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("zero_optimization", {}), dict):
        raise OLHError(f"DeepSpeed config {path} must be a JSON object (see ds_configs/)")
    return d


def ds_config(cfg: RunConfig, rt: Runtime) -> dict:
    t = cfg.train  # batch sizes and clipping come from our config so one JSON serves every preset
    return {"steps_per_print": 10 ** 9, **rt.ds_json, "train_micro_batch_size_per_gpu": t.batch_size,
            "gradient_accumulation_steps": t.grad_accum, "train_batch_size": t.batch_size * t.grad_accum * rt.world,
            "gradient_clipping": t.grad_clip, "bf16": {"enabled": rt.dtype == torch.bfloat16}}


def full_state_dict(module: torch.nn.Module, zero_stage: int) -> dict:
    """Unsharded weights on every rank (ZeRO-3 gathers the partitions; a collective)."""
    if zero_stage == 3:
        import deepspeed
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


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


def keep_freed_memory() -> None:
    """By default glibc may give the freed top of its heap (and large blocks) back to the kernel, so a CPU step
    faults in again, page by page, the activations and gradients the step before had freed: per demo-size
    step at batch 4, ~3,700 faults for a plain step and ~9,200 for an aligned one, ~30 and ~90 with this
    (benchmarks/bench_page_faults.py). Raising the trim and mmap thresholds keeps freed memory in the
    process for reuse, at the cost of keeping its peak until exit. Process-wide; a no-op without glibc."""
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest allowed value on 64-bit
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
