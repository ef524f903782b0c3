"""Training throughput: our trainer (alpha = 0, alpha = 0.1, compute-matched) vs a reference plain
PyTorch loop over a `transformers` GPT-2 of the same width/depth/vocab/sequence length, same machine,
same run. Prints ratios; no thresholds (speed targets live here, not in tests).

    python -m benchmarks.bench_train [--preset demo] [--steps 40] [--arch decoder]

DESIGN §6: a regularized step runs two forward/backward passes of length L, so its theoretical FLOP
ratio to a plain step is 2.0; alpha = 0 must cost the same as a plain step.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from trainer.config import preset
from trainer.train import train


def run_ours(base_args, steps, **over):
    with tempfile.TemporaryDirectory() as d:
        cfg = preset(base_args.preset)
        cfg.train.out, cfg.train.max_steps, cfg.model.arch = str(Path(d) / "r"), steps, base_args.arch
        cfg.train.save_every = 0
        for k, v in over.items():
            cfg.set(k, v)
        train(cfg)
        rows = [json.loads(x) for x in (Path(d) / "r/metrics.jsonl").read_text().splitlines()]
    rows = rows[min(5, steps // 4):]  # skip warm-up steps
    return statistics.median(r["step_ms"] for r in rows), statistics.median(r["tokens_per_s"] for r in rows), cfg


def run_reference(cfg, steps):
    """The plainest loop: HF GPT-2, AdamW, CE loss, clip, step; random tokens of the same shape."""
    from transformers import GPT2Config, GPT2LMHeadModel
    m = cfg.model
    torch.manual_seed(0)
    hf_cfg = GPT2Config(vocab_size=m.vocab_size, n_embd=m.d_model, n_layer=m.n_layer, n_head=m.n_head,
                        n_positions=max(1024, cfg.data.seq_len), resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    hf_cfg._attn_implementation = "sdpa"  # the same fused attention kernel as ours
    model = GPT2LMHeadModel(hf_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    B, L = cfg.train.batch_size, cfg.data.seq_len
    times = []
    for i in range(steps):
        x = torch.randint(0, m.vocab_size, (B, L))
        t0 = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times[min(5, steps // 4):]) * 1e3
    return ms, B * L / ms * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--arch", default="decoder")
    p.add_argument("--steps", type=int, default=40)
    a = p.parse_args(argv)
    plain_ms, plain_tps, cfg = run_ours(a, a.steps, alpha=0.0)
    align_ms, align_tps, _ = run_ours(a, a.steps, alpha=0.1)
    pair_ms, _, _ = run_ours(a, a.steps, alpha=0.0, pair_windows=True)
    rows = [("ours, alpha=0 (plain)", plain_ms, plain_tps), ("ours, alpha=0.1", align_ms, align_tps),
            ("ours, alpha=0 + pair_windows", pair_ms, None)]
    if a.arch == "decoder":
        ref_ms, ref_tps = run_reference(cfg, a.steps)
        rows.append(("reference HF GPT-2 loop", ref_ms, ref_tps))
    print(f"\npreset={a.preset} arch={a.arch} batch={cfg.train.batch_size} L={cfg.data.seq_len} "
          f"d={cfg.model.d_model} layers={cfg.model.n_layer} threads={torch.get_num_threads()}")
    print(f"{'run':34s} {'step ms':>9s} {'tokens/s':>10s}")
    for name, ms, tps in rows:
        print(f"{name:34s} {ms:9.1f} {'' if tps is None else f'{tps:10.0f}'}")
    print(f"\nalpha=0.1 / alpha=0 step time: {align_ms / plain_ms:.2f}  (theoretical FLOP ratio 2.00)")
    print(f"pair_windows / alpha=0.1 step time: {pair_ms / align_ms:.2f}  (same passes, no divergence)")
    if a.arch == "decoder":
        print(f"ours alpha=0 / reference tokens/s: {plain_tps / ref_tps:.2f}")


if __name__ == "__main__":
    sys.exit(main())
