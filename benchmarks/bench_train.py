"""Training throughput per model family: our loop at alpha = 0 (plain), alpha = 0.1 (aligned) and
alpha = 0 with both windows (compute-matched), and for the decoder a reference plain PyTorch loop over
a `transformers` GPT-2 of the same width/depth/vocab/length. Prints every ratio, writes JSON.

    python -m benchmarks.bench_train --threads 1 --json docs/bench/bench_train.json
    python -m benchmarks.bench_train --table docs/bench/bench_train.json   # the README's Speed table

Every configuration is built once per round by the trainer's own start-up (`setup`, `build`) and
stepped by the loop's own `train_step` and `MetricsLog.step`; the configurations then take turns one
step at a time (the order rotating each step), so a shared machine's load and drift fall on all of
them alike. Each round is a fresh process (memory layout differs between processes, so does speed).
Step times are medians over every step after the first --warmup of each round, wall clock and process
CPU time; a ratio is the ratio of medians, pooled over rounds, and each round's ratio is kept. An
aligned step runs two windows of L, so 2.0 is its FLOP ratio to a plain step (encdec: the short view's
encoder reads L - l_extra tokens, so less). No thresholds: speed targets live here, not in tests.
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

CONFIGS = {"plain": dict(alpha=0.0), "aligned": dict(alpha=0.1), "pair": dict(alpha=0.0, pair_windows=True)}


def ours(a, arch, tok, out, **over):
    """One step of our loop per call, as `trainer.train.train` runs it (max_steps is never reached, so no
    logging step: the measured steps never wait for a host sync)."""
    from trainer.metrics import MetricsLog
    from trainer.start import setup
    from trainer.train import build, train_step
    cfg = preset(a.preset)
    for k, v in dict(out=out, max_steps=a.warmup + a.steps + 1, arch=arch, save_every=0, log_every=10 ** 9,
                     threads=a.threads, tokenizer=tok, batch_size=a.batch_size, compile=a.compile, **over).items():
        cfg.set(k, v)
    st = setup(cfg, -1)
    tr = build(st.cfg, st.rt, st.out, st)
    tr.module.train()
    log = MetricsLog(tr, 0)
    log.bar.disable = True
    n = [0]

    def step():
        loss, m, lr = train_step(tr, n[0])
        n[0] += 1
        log.step(n[0], loss, m, lr, 0.0)
    return step


def reference(a):
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
    if a.compile:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    B, L = a.batch_size, cfg.data.seq_len

    def step():
        x = torch.randint(0, m.vocab_size, (B, L))
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


def shared_tokenizer(a, d) -> str:
    """Train the preset's tokenizer once (a 1-step run) so every measured run reuses it."""
    from trainer.train import train
    cfg = preset(a.preset)
    for k, v in dict(out=str(Path(d) / "tok"), max_steps=1, alpha=0.0, threads=a.threads).items():
        cfg.set(k, v)
    train(cfg)
    return str(Path(d) / "tok/tokenizer.model")


def one_round(a, tok: str) -> dict:
    """This process's round: {"family/config": [[wall ms, cpu ms] per measured step]}."""
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        steps = {}
        for f in a.families:
            for c, over in CONFIGS.items():
                steps[f"{f}/{c}"] = ours(a, f, tok, str(Path(d) / f"{f}-{c}"), **over)
            if f == "decoder":
                steps[f"{f}/reference"] = reference(a)
        names, times = list(steps), {k: [] for k in steps}
        for i in range(a.warmup + a.steps):
            for k in names[i % len(names):] + names[:i % len(names)]:
                w0, c0 = time.perf_counter(), time.process_time()
                steps[k]()
                if i >= a.warmup:
                    times[k].append([1e3 * (time.perf_counter() - w0), 1e3 * (time.process_time() - c0)])
    return times


def measure(a) -> dict:
    rounds = []
    with tempfile.TemporaryDirectory() as d:
        tok = shared_tokenizer(a, d)
        for r in range(a.rounds):  # each round in a fresh process
            out = Path(d) / f"round{r}.json"
            cmd = [sys.executable, "-m", "benchmarks.bench_train", "--_round", str(out), "--_tokenizer", tok,
                   *(x for k in ("preset", "families", "steps", "warmup", "batch_size", "threads")
                     for x in (f"--{k}", str(getattr(a, k)) if k != "families" else ",".join(a.families)))]
            subprocess.run(cmd + (["--compile"] if a.compile else []), check=True, cwd=Path(__file__).parent.parent)
            rounds.append(json.loads(out.read_text()))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    cfg = preset(a.preset)
    B, L, tgt = a.batch_size, cfg.data.seq_len, cfg.data.tgt_len

    # per round and configuration: the median step (wall ms, CPU ms); a table entry is the median over rounds,
    # of times and of each round's own ratio alike (rounds run at different speeds, so pooling mixes them)
    med = [{k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in r.items()} for r in rounds]

    def over_rounds(num, den, i=0):  # (median, every round's value) of num/den
        xs = [m[num][i] / m[den][i] for m in med]
        return statistics.median(xs), xs
    out = {}
    for f in a.families:
        tokens = B * (L + (tgt if f == "encdec" else 0))
        r = {f"{c}{s}_ms": statistics.median(m[f"{f}/{c}"][i] for m in med)
             for c in CONFIGS for i, s in ((0, ""), (1, "_cpu"))}
        (ap, ap_rounds), (pa, _), (ap_cpu, _) = (over_rounds(f"{f}/aligned", f"{f}/plain"),
                                                 over_rounds(f"{f}/pair", f"{f}/aligned"),
                                                 over_rounds(f"{f}/aligned", f"{f}/plain", 1))
        r |= {"plain_tokens_per_s": tokens / r["plain_ms"] * 1e3, "n_steps": sum(len(x[f"{f}/plain"]) for x in rounds),
              "aligned_over_plain": ap, "pair_over_aligned": pa, "aligned_over_plain_cpu": ap_cpu,
              "aligned_over_plain_per_round": ap_rounds}
        if f"{f}/reference" in rounds[0]:
            (po, po_rounds), (po_cpu, _) = (over_rounds(f"{f}/reference", f"{f}/plain"),
                                            over_rounds(f"{f}/reference", f"{f}/plain", 1))
            r["reference_ms"], r["reference_cpu_ms"] = (statistics.median(m[f"{f}/reference"][i] for m in med) for i in (0, 1))
            r |= {"reference_tokens_per_s": B * L / r["reference_ms"] * 1e3, "plain_over_reference_tokens_per_s": po,
                  "plain_over_reference_cpu": po_cpu, "plain_over_reference_per_round": po_rounds}
        r["per_round_median_ms"] = [{k.split("/")[1]: v[0] for k, v in m.items() if k.startswith(f + "/")} for m in med]
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


def _spread(xs) -> str:  # a ratio's range over the rounds, when the JSON has them
    return f" ({min(xs):.2f}–{max(xs):.2f})" if xs and len(xs) > 1 else ""


def table(res: dict) -> str:
    """The README's Speed table, from a JSON this script wrote (ranges: the ratio in each round alone)."""
    rows = ["| family | plain step ms | aligned step ms | aligned / plain | pair_windows / aligned "
            "| plain tokens/s | reference GPT-2 tokens/s | ours / reference |", "|---" * 8 + "|"]
    per_round = res.get("per_round_ranges", False)  # older JSONs: the README printed no ranges
    for f, r in res["results"].items():
        ref = (f"{r['reference_tokens_per_s']:.0f} | {r['plain_over_reference_tokens_per_s']:.2f}x"
               + (_spread(r.get("plain_over_reference_per_round")) if per_round else "")
               if "reference_ms" in r else "– | –")
        rows.append(f"| {f} | {r['plain_ms']:.1f} | {r['aligned_ms']:.1f} | {r['aligned_over_plain']:.2f}x"
                    + (_spread(r.get("aligned_over_plain_per_round")) if per_round else "")
                    + f" | {r['pair_over_aligned']:.2f} | {r['plain_tokens_per_s']:.0f} | {ref} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--families", default="decoder,encdec,rnn")
    p.add_argument("--steps", type=int, default=30, help="measured steps per configuration and round (after warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of every round")
    p.add_argument("--rounds", type=int, default=2, help="rounds, each in a fresh process")
    p.add_argument("--batch_size", type=int, default=16, help="sequences per step (the demo preset's 16)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile our models and the reference")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--table", default="", help="print the README table of a JSON written before, and exit")
    p.add_argument("--_round", default="", help=argparse.SUPPRESS)  # internal: run one round, write its times
    p.add_argument("--_tokenizer", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.table:
        print(table(json.loads(Path(a.table).read_text())))
        return 0
    a.families = a.families.split(",")
    if a._round:
        Path(a._round).write_text(json.dumps(one_round(a, a._tokenizer)))
        return 0
    res = {"machine": machine(), "command": "python -m benchmarks.bench_train " + " ".join(argv or sys.argv[1:]),
           "preset": a.preset, "batch_size": a.batch_size, "threads": a.threads, "compile": a.compile,
           "interleaved": "per step, one process per round", "per_round_ranges": True}
    res["results"] = measure(a)
    res["machine"]["load_avg_at_end"] = os.getloadavg()[0]
    print(f"\npreset={a.preset} batch={a.batch_size} threads={a.threads} compile={a.compile} rounds={a.rounds} "
          f"(medians of step ms; load avg {res['machine']['load_avg_at_start']:.1f} -> "
          f"{res['machine']['load_avg_at_end']:.1f})")
    print(table(res))
    for f, r in res["results"].items():
        ref = r.get("plain_over_reference_per_round")
        print(f"{f}: CPU-time aligned/plain {r['aligned_over_plain_cpu']:.2f}"
              + (f", ours/reference {r['plain_over_reference_cpu']:.2f}" if ref else "")
              + f"; per round: aligned/plain {' '.join(f'{x:.2f}' for x in r['aligned_over_plain_per_round'])}"
              + (f"; ours/reference {' '.join(f'{x:.2f}' for x in ref)}" if ref else ""))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
