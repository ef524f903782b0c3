"""``ol`` vs lm-eval's ``hf`` on the same weights: log-likelihood agreement and speed (DESIGN §6).

    python -m benchmarks.bench_ol_vs_hf RUN_DIR [--n 200] [--device cpu] [--batch_size 16]

Exports RUN_DIR (a decoder or rnn checkpoint) with ``olharness.export_hf`` into a temp folder,
builds the same requests for both models (``loglikelihood`` of 30-character continuations after
contexts cut from the held-out text, and ``loglikelihood_rolling`` of held-out passages), and
prints the largest absolute difference and the best wall time of each over ``--repeats`` passes
(alternating the two models, after a warm-up of both). On a shared machine read the ratio as
indicative.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=200, help="loglikelihood requests")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per model (best one reported)")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    import olharness  # noqa: F401  (registers ol)
    from olharness.export_hf import export
    from trainer.data import load_corpus

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
        out, secs = {}, {name: float("inf") for name in models}
        for lm in models.values():  # warm-up: allocator, thread pools, lazy imports
            lm.loglikelihood(ll_reqs[:32], disable_tqdm=True)
        for _ in range(a.repeats):  # alternate the two so that load changes hit both alike
            for name, lm in models.items():
                t = time.perf_counter()
                ll = lm.loglikelihood(ll_reqs, disable_tqdm=True)
                roll = lm.loglikelihood_rolling(roll_reqs, disable_tqdm=True)
                secs[name] = min(secs[name], time.perf_counter() - t)
                out[name] = [x[0] for x in ll] + roll
    diff = max(abs(x - y) for x, y in zip(out["ol"], out["hf"]))
    print(f"device={a.device} torch_threads={torch.get_num_threads()} requests: {len(ll_reqs)} loglikelihood + "
          f"{len(roll_reqs)} rolling (4000 chars), batch_size={a.batch_size}, best of {a.repeats}")
    print(f"max |ll_ol - ll_hf| = {diff:.3g}")
    print(f"ol {secs['ol']:.2f} s   hf {secs['hf']:.2f} s   hf/ol time ratio = {secs['hf'] / secs['ol']:.2f}")


if __name__ == "__main__":
    main()
