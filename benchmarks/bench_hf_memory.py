"""Peak memory of one training step with alignment (alpha = 0.1) vs a plain step (alpha = 0), --arch hf.

    python benchmarks/bench_hf_memory.py                       # L = 1024, V = 32000, tiny-width Llama, CPU
    python benchmarks/bench_hf_memory.py --seq_len 512 --out docs/bench/hf_memory_512.json

Each step runs in a fresh process: it builds the model and a batch, records its resident set size,
runs one forward + backward of the trainer's Objective, and reports the peak RSS growth over that
baseline (ru_maxrss). At this width the step's memory is the [B, L, V] logits and what is computed
from them, so the ratio shows how many vocabulary-sized tensors the misalignment term adds: the two
windows alone make 2x. Written to docs/bench/hf_memory.json (both numbers and the ratio).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: glibc raises its mmap threshold after the first large free, after which freed tensors stay in the
#: heap and in RSS; a fixed threshold maps every tensor-sized block and unmaps it on free, so the
#: peak RSS growth is the peak of live tensor memory (what torch.cuda.max_memory_allocated is on a GPU)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def one_step(args) -> dict:
    """Runs in the child process."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from trainer.alignment import Objective
    from trainer.config import preset
    from trainer.start import load_pretrained

    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        conf = LlamaConfig(vocab_size=args.vocab, hidden_size=args.width, intermediate_size=2 * args.width,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=args.seq_len, eos_token_id=0, bos_token_id=0)
        LlamaForCausalLM(conf).save_pretrained(d)
        PreTrainedTokenizerFast(tokenizer_file=str(ROOT / "tests/assets/hf_tokenizer/tokenizer.json"),
                                eos_token="<|endoftext|>").save_pretrained(d)
        cfg = preset("tiny")
        for k, v in dict(arch="hf", init_from=d, seq_len=args.seq_len, batch_size=args.batch, alpha=args.alpha,
                         pair_windows=args.pair_windows).items():
            cfg.set(k, v)
        model, tok = load_pretrained(cfg, Path(d))
    obj = Objective(cfg, "causal", tok.bos_id)
    seq = torch.randint(0, args.vocab, (args.batch, obj.window), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():  # gradient buffers exist before the baseline, as in any step after the first
        p.grad = torch.zeros_like(p)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss, m = obj(model, seq, 0, gen)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"alpha": args.alpha, "pair_windows": args.pair_windows, "step_peak_mb": (peak - base) / 1024,
            "baseline_mb": base / 1024, "l_extra": m.get("l_extra")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq_len", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--alpha", type=float, default=None, help=argparse.SUPPRESS)  # child mode
    p.add_argument("--pair_windows", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "docs/bench/hf_memory.json"))
    a = p.parse_args(argv)
    if a.alpha is not None:
        print(json.dumps(one_step(a)))
        return 0
    base_args = ["--seq_len", str(a.seq_len), "--vocab", str(a.vocab), "--width", str(a.width), "--batch", str(a.batch)]
    rows = {}
    for name, extra in (("plain", ["--alpha", "0"]), ("compute_matched", ["--alpha", "0", "--pair_windows"]),
                        ("aligned", ["--alpha", "0.1"])):
        out = subprocess.run([sys.executable, __file__, *base_args, *extra], capture_output=True, text=True,
                             cwd=ROOT, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                        "TOKENIZERS_PARALLELISM": "false", **MALLOC_ENV})
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    logits_mb = a.batch * a.seq_len * a.vocab * 4 / 2 ** 20
    res = {"command": "python benchmarks/bench_hf_memory.py " + " ".join(base_args), "seq_len": a.seq_len,
           "vocab": a.vocab, "width": a.width, "batch": a.batch, "one_logits_tensor_mb": logits_mb,
           **{f"{k}_step_peak_mb": v["step_peak_mb"] for k, v in rows.items()},
           "ratio_aligned_vs_plain": rows["aligned"]["step_peak_mb"] / rows["plain"]["step_peak_mb"],
           "ratio_compute_matched_vs_plain": rows["compute_matched"]["step_peak_mb"] / rows["plain"]["step_peak_mb"],
           "l_extra": rows["aligned"]["l_extra"], "machine": "CPU, fp32, one thread", "env": MALLOC_ENV}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
