"""Page faults and CPU time per training step with and without `keep_freed_memory` (trainer/runtime.py).

    python -m benchmarks.bench_page_faults --json docs/bench/page_faults.json

Each (setting, alpha) runs in its own process (the allocator setting is process-wide): a demo-preset decoder,
batch 4, one thread, 3 warm-up steps, then minor page faults and process CPU time over --steps steps of
forward, backward and optimizer step. The settings alternate over --rounds rounds; medians are printed."""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, time, torch
from trainer.runtime import keep_freed_memory
if {keep}:
    keep_freed_memory()
from trainer.alignment import Objective
from trainer.config import preset
from trainer.models import build_model
from trainer.train import make_optimizer
torch.set_num_threads(1)
torch.manual_seed(0)
cfg = preset("demo")
cfg.set("alpha", {alpha})
cfg.set("batch_size", 4)
model = build_model(cfg.model)
opt, _ = make_optimizer(model, cfg)
obj = Objective(cfg, model.kind, 1)
gen = torch.Generator().manual_seed(0)
x = torch.randint(0, cfg.model.vocab_size, (4, obj.window))
def step():
    opt.zero_grad(set_to_none=True)
    obj(model, x, 5, gen)[0].backward()
    opt.step()
for _ in range(3):
    step()
f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
for _ in range({steps}):
    step()
print(json.dumps({{"faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / {steps},
                  "cpu_ms": 1e3 * (time.process_time() - t0) / {steps}}}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    rows = {(k, al): [] for al in (0.0, 0.1) for k in (False, True)}
    for _ in range(a.rounds):
        for (keep, alpha), out in rows.items():
            code = CHILD.format(keep=keep, alpha=alpha, steps=a.steps)
            out.append(json.loads(subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                                                 text=True, check=True).stdout.strip().splitlines()[-1]))
    res = {"command": "python -m benchmarks.bench_page_faults " + " ".join(argv or sys.argv[1:]),
           "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip(),
           "cores": os.cpu_count(), "results": []}
    print("| step | keep_freed_memory | page faults / step | CPU ms / step |\n|---|---|---|---|")
    for (keep, alpha), out in rows.items():
        r = {"alpha": alpha, "keep_freed_memory": keep, "faults_per_step": statistics.median(o["faults"] for o in out),
             "cpu_ms_per_step": statistics.median(o["cpu_ms"] for o in out), "rounds": out}
        res["results"].append(r)
        print(f"| {'aligned' if alpha else 'plain'} | {'yes' if keep else 'no'} | {r['faults_per_step']:.0f} "
              f"| {r['cpu_ms_per_step']:.1f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
