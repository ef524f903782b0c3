"""Training throughput per model family: our loop at alpha = 0 (plain), alpha = 0.1 (aligned) and
alpha = 0 with both windows (compute-matched), and for the decoder a reference plain PyTorch loop over
a `transformers` GPT-2 of the same width/depth/vocab/length. Prints every ratio, writes JSON.

    python -m benchmarks.bench_train --threads 1 --json docs/bench/bench_train.json
    python -m benchmarks.bench_train --table docs/bench/bench_train.json   # the README's Speed table

Each configuration is one `trainer.train` run; the runs go round-robin in --rounds rounds so that a
shared machine's load falls on all of them alike. Step times are medians over every step after the
first --warmup of each run (>= 30 steps per configuration in total). An aligned step runs two
windows of L, so 2.0 is its FLOP ratio to a plain step (encdec: the short view's encoder reads
L - l_extra tokens, so less). No thresholds: speed targets live here, not in tests.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from trainer.config import preset
from trainer.train import train

CONFIGS = {"plain": dict(alpha=0.0), "aligned": dict(alpha=0.1), "pair": dict(alpha=0.0, pair_windows=True)}


def run_ours(a, arch, tok, steps, **over) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        cfg = preset(a.preset)
        for k, v in dict(out=str(Path(d) / "r"), max_steps=steps, arch=arch, save_every=0, log_every=steps,
                         threads=a.threads, tokenizer=tok, batch_size=a.batch_size, **over).items():
            cfg.set(k, v)
        if a.compile:
            cfg.set("compile", True)
        train(cfg)
        rows = [json.loads(x) for x in (Path(d) / "r/metrics.jsonl").read_text().splitlines()]
    return [r["step_ms"] for r in rows[a.warmup:]]


def run_reference(a, steps) -> list[float]:
    """The plainest loop: HF GPT-2, AdamW, CE loss, clip, step; random tokens of the same shape."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = preset(a.preset)
    m = cfg.model
    torch.manual_seed(0)
    hf_cfg = GPT2Config(vocab_size=m.vocab_size, n_embd=m.d_model, n_layer=m.n_layer, n_head=m.n_head,
                        n_positions=max(1024, cfg.data.seq_len), resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    hf_cfg._attn_implementation = "sdpa"  # the same fused attention kernel as ours
    model = GPT2LMHeadModel(hf_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    B, L = a.batch_size, cfg.data.seq_len
    times = []
    for _ in range(steps):
        x = torch.randint(0, m.vocab_size, (B, L))
        t0 = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(1e3 * (time.perf_counter() - t0))
    return times[a.warmup:]


def shared_tokenizer(a, d) -> str:
    """Train the preset's tokenizer once (a 1-step run) so every measured run reuses it."""
    cfg = preset(a.preset)
    cfg.set("out", str(Path(d) / "tok"))
    cfg.set("max_steps", 1)
    cfg.set("alpha", 0.0)
    cfg.set("threads", a.threads)
    train(cfg)
    return str(Path(d) / "tok/tokenizer.model")


def measure(a) -> dict:
    torch.set_num_threads(a.threads)
    per_round = a.warmup + -(-a.steps // a.rounds)
    ms = {(f, c): [] for f in a.families for c in CONFIGS}
    ms.update({("decoder", "reference"): []} if "decoder" in a.families else {})
    rounds = []  # per round, per (family, config): that run's median
    with tempfile.TemporaryDirectory() as d:
        tok = shared_tokenizer(a, d)
        for _ in range(a.rounds):
            rounds.append({})
            for f in a.families:
                for c, over in CONFIGS.items():
                    rounds[-1][f, c] = run_ours(a, f, tok, per_round, **over)
                if f == "decoder":
                    rounds[-1][f, "reference"] = run_reference(a, per_round)
            for k, v in rounds[-1].items():
                ms[k] += v
                rounds[-1][k] = statistics.median(v)
    cfg = preset(a.preset)
    B, L, tgt = a.batch_size, cfg.data.seq_len, cfg.data.tgt_len
    out = {}
    for f in a.families:
        med = {c: statistics.median(ms[f, c]) for c in CONFIGS}
        tokens = B * (L + (tgt if f == "encdec" else 0))
        r = {f"{c}_ms": v for c, v in med.items()} | {"plain_tokens_per_s": tokens / med["plain"] * 1e3,
                                                        "n_steps": len(ms[f, "plain"]),
                                                        "aligned_over_plain": med["aligned"] / med["plain"],
                                                        "pair_over_aligned": med["pair"] / med["aligned"],
                                                        # the spread of the load: the same ratio in each round alone
                                                        "aligned_over_plain_per_round": [r[f, "aligned"] / r[f, "plain"] for r in rounds]}
        if (f, "reference") in ms:
            ref = statistics.median(ms[f, "reference"])
            r |= {"reference_ms": ref, "reference_tokens_per_s": B * L / ref * 1e3,
                  "plain_over_reference_tokens_per_s": ref / med["plain"],
                  "plain_over_reference_per_round": [r[f, "reference"] / r[f, "plain"] for r in rounds]}
        out[f] = r
    return out


def machine() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": None, "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_at_start": os.getloadavg()[0],
            "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def table(res: dict) -> str:
    """The README's Speed table, from a JSON this script wrote."""
    rows = ["| family | plain step ms | aligned step ms | aligned / plain | pair_windows / aligned "
            "| plain tokens/s | reference GPT-2 tokens/s | ours / reference |", "|---" * 8 + "|"]
    for f, r in res["results"].items():
        ref = (f"{r['reference_tokens_per_s']:.0f} | {r['plain_over_reference_tokens_per_s']:.2f}x"
               if "reference_ms" in r else "– | –")
        rows.append(f"| {f} | {r['plain_ms']:.1f} | {r['aligned_ms']:.1f} | {r['aligned_over_plain']:.2f}x "
                    f"| {r['pair_over_aligned']:.2f} | {r['plain_tokens_per_s']:.0f} | {ref} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--families", default="decoder,encdec,rnn")
    p.add_argument("--steps", type=int, default=30, help="measured steps per configuration (after warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of every run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=16, help="sequences per step (the demo preset's 16)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="--compile for our runs")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--table", default="", help="print the README table of a JSON written before, and exit")
    a = p.parse_args(argv)
    if a.table:
        print(table(json.loads(Path(a.table).read_text())))
        return 0
    a.families = a.families.split(",")
    res = {"machine": machine(), "command": "python -m benchmarks.bench_train " + " ".join(argv or sys.argv[1:]),
           "preset": a.preset, "batch_size": a.batch_size, "threads": a.threads, "compile": a.compile, "results": measure(a)}
    res["machine"]["load_avg_at_end"] = os.getloadavg()[0]
    print(f"\npreset={a.preset} batch={a.batch_size} threads={a.threads} compile={a.compile} (medians of step ms; load avg "
          f"{res['machine']['load_avg_at_start']:.1f} -> {res['machine']['load_avg_at_end']:.1f})")
    print(table(res))
    for f, r in res["results"].items():
        ref = r.get("plain_over_reference_per_round")
        print(f"{f} per round: aligned/plain {' '.join(f'{x:.2f}' for x in r['aligned_over_plain_per_round'])}"
              + (f"; ours/reference {' '.join(f'{x:.2f}' for x in ref)}" if ref else ""))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
