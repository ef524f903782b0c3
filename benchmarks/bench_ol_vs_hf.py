"""``ol`` vs lm-eval's ``hf`` on the same weights: log-likelihood agreement, speed, generation scaling.

    python -m trainer.train --preset demo --max_steps 20 --out runs/bench   # any decoder/rnn run
    python -m benchmarks.bench_ol_vs_hf runs/bench [--n 200] [--json docs/bench/ol_vs_hf.json]

Exports RUN_DIR with ``olharness.export_hf`` into a temp folder and builds the same requests for
both models: ``loglikelihood`` of 30-character continuations after 2000-character contexts cut
from the held-out text, and ``loglikelihood_rolling`` of held-out passages. Prints the largest
absolute difference and the best wall time of each over ``--repeats`` passes (alternating the two
models, after a warm-up of both), then ``ol``'s greedy generation time per new token at two output
lengths (constant per-token time = linear generation). Writes everything, with the machine and the
git commit, as JSON. On a shared machine read the ratios as indicative.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _gen_ms_per_token(lm, prompt: str, n_new: int) -> tuple[float, int]:
    """Best-of-3 wall time of one greedy generation, per generated token."""
    from lm_eval.api.instance import Instance

    req = Instance("generate_until", {}, (prompt, {"until": ["@@@@"], "max_gen_toks": n_new}), 0)
    best, n = float("inf"), 1
    for _ in range(3):
        t = time.perf_counter()
        (out,) = lm.generate_until([req], disable_tqdm=True)
        best = min(best, time.perf_counter() - t)
        n = max(1, len(lm.tok_encode(out)))
    return 1000 * best / n, n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=200, help="loglikelihood requests")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads (keep it small on a shared CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per model (best one reported)")
    p.add_argument("--gen_tokens", type=int, nargs=2, default=[32, 256], help="two generation lengths")
    p.add_argument("--json", default="", help="write the results here")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    import olharness  # noqa: F401  (registers ol)
    from olharness.export_hf import export
    from trainer.data import load_corpus

    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]  # the machine is shared: say how busy it was
    text = load_corpus("austen").heldout[0]
    step = max(1, min(len(text) - 200, 20000) // a.n)
    ll_reqs = [Instance("loglikelihood", {}, (text[max(0, i - 2000):i], text[i:i + 30]), 0)
               for i in range(100, 100 + step * a.n, step)][:a.n]
    roll_reqs = [Instance("loglikelihood_rolling", {}, (text[i:i + 4000],), 0) for i in range(0, 40000, 4000)]
    with tempfile.TemporaryDirectory() as tmp:
        export(a.run_dir, tmp)
        models = {
            "ol": get_model("ol")(pretrained=a.run_dir, device=a.device, batch_size=a.batch_size),
            "hf": get_model("hf")(pretrained=tmp, trust_remote_code=True, device=a.device, batch_size=a.batch_size,
                                  dtype="float32"),
        }
        out, secs = {}, {(name, kind): float("inf") for name in models for kind in ("ll", "rolling")}
        for lm in models.values():  # warm-up: allocator, thread pools, lazy imports
            lm.loglikelihood(ll_reqs[:32], disable_tqdm=True)
        for _ in range(a.repeats):  # alternate the two so that load changes hit both alike
            for name, lm in models.items():
                t0 = time.perf_counter()
                ll = lm.loglikelihood(ll_reqs, disable_tqdm=True)
                t1 = time.perf_counter()
                roll = lm.loglikelihood_rolling(roll_reqs, disable_tqdm=True)
                t2 = time.perf_counter()
                secs[name, "ll"] = min(secs[name, "ll"], t1 - t0)
                secs[name, "rolling"] = min(secs[name, "rolling"], t2 - t1)
                out[name] = [x[0] for x in ll] + roll
        gen = {n: _gen_ms_per_token(models["ol"], text[:1500], n) for n in a.gen_tokens}
    diff = max(abs(x - y) for x, y in zip(out["ol"], out["hf"]))
    (n1, (ms1, k1)), (n2, (ms2, k2)) = gen.items()
    res = {
        "machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "device": a.device, "load_avg_1m_before": load0, "load_avg_1m_after": os.getloadavg()[0]},
        "commit": _commit(),
        "run_dir": str(a.run_dir),
        "requests": {"loglikelihood": len(ll_reqs), "loglikelihood_rolling": len(roll_reqs),
                     "batch_size": a.batch_size, "repeats": a.repeats},
        "max_abs_diff": diff,
        **{f"{name}_{kind}_s": v for (name, kind), v in secs.items()},
        "hf_over_ol": {kind: secs["hf", kind] / secs["ol", kind] for kind in ("ll", "rolling")}
        | {"all": (secs["hf", "ll"] + secs["hf", "rolling"]) / (secs["ol", "ll"] + secs["ol", "rolling"])},
        "generation": {"ms_per_token": {str(k1): ms1, str(k2): ms2}, "per_token_ratio": ms2 / ms1},
    }
    print(f"device={a.device} torch_threads={torch.get_num_threads()} requests: {len(ll_reqs)} loglikelihood + "
          f"{len(roll_reqs)} rolling (4000 chars), batch_size={a.batch_size}, best of {a.repeats}, commit {res['commit']}")
    print(f"max |ll_ol - ll_hf| = {diff:.3g}")
    for kind, what in (("ll", "loglikelihood"), ("rolling", "loglikelihood_rolling")):
        print(f"{what:22s} ol {secs['ol', kind]:6.2f} s   hf {secs['hf', kind]:6.2f} s   "
              f"hf/ol time ratio = {res['hf_over_ol'][kind]:.2f}")
    print(f"{'both':22s} hf/ol time ratio = {res['hf_over_ol']['all']:.2f}")
    print(f"ol greedy generation: {ms1:.2f} ms/token at {k1} new tokens, {ms2:.2f} ms/token at {k2} "
          f"(ratio {ms2 / ms1:.2f}; 1.0 = linear in the number of new tokens)")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
