"""The README's ablation-family tables and its LSM-correlation table, printed from committed results.

    python -m scripts.family_tables [docs/families/results.jsonl] [docs/zoo/results.jsonl]

One table per family of grids/families.yaml: the two baselines (alpha = 0 with one window, and the
compute-matched alpha = 0 with both windows) beside the family's cells; mean ± std over seeds, and the
paired per-seed difference of PPL 8xL to alpha = 0 of the same model family. Then one row per
long-context score and predictor (Pearson and Spearman r with bootstrap 95 % intervals) over the zoo, over
its decoders that trained (the undertrained models are outliers that can drive a Pearson r alone), and over
the zoo and the families grid together (the families grid has no copy score).
tests/test_ablate.py checks that the README holds exactly these tables.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.report_plots import correlation_rows, correlations, mean_std
from trainer.results import read_rows

A = {"alpha": 0.1}
BASE = [("α = 0 (one window)", {"alpha": 0.0}), ("α = 0, both windows (compute-matched)", {"alpha": 0.0, "pair_windows": True})]
HID = {"hidden_layers": "0,1,2,3"}
FAMILIES = {
    "Divergence (α = 0.1)": [(d, dict(A, divergence=d) if d != "sce" else A) for d in ("sce", "kl", "sym_kl", "js", "l2")],
    "Scope (α = 0.1, SCE)": [(s, dict(A, scope=s) if s != "all" else A) for s in ("all", "last", "first", "first_frac:0.1")],
    "α schedule (SCE)": [("constant 0.1", A), ("cosine ramp 0 → 0.1", dict(A, alpha_schedule="cosine")),
                         ("step 0.1 → 0.2 (step 50) → 0.3 (step 100)",
                          dict(A, alpha_schedule="step", alpha_milestones="50:0.2,100:0.3")),
                         ("0.1 × (4L/L)^0.5 = 0.2", dict(A, alpha_len_p=0.5))],
    "Target (α = 0.1, SCE)": [("logits", A), ("hidden (all 4 layers)", dict(A, target="hidden", **HID)),
                              ("hidden + logits", dict(A, target="hidden+logits", **HID))],
}
COLS = [("final LM loss", "final_lm_loss", "{:.3f}"), ("LSM (SCE)", "olh_lsm/lsm", "{:.2f}"),
        ("LSM (sym KL)", "olh_lsm/lsm_symkl", "{:.2g}"), ("PPL 8×L", "olh_ppl_len_8x/token_perplexity", "{:.1f}"),
        ("excess NLL 4–8×L", "olh_ppl_len_8x/excess_4-8x", "{:+.3f}")]
PPL8 = "olh_ppl_len_8x/token_perplexity"
TRAINED = 5.5  # final LM loss below which a zoo model counts as trained (PPL 1xL < ~200)


def _families() -> dict[str, list[tuple[str, dict]]]:
    fams = {name: BASE + cells for name, cells in FAMILIES.items()}
    fams["Model family (SCE)"] = [(f"{arch}, {label}", dict(over, arch=arch) if arch != "decoder" else over)
                                  for arch in ("decoder", "encdec", "rnn") for label, over in BASE + [("α = 0.1", A)]]
    return fams


def _ms(vals: list[float], fmt: str) -> str:
    if not vals:
        return "—"
    m, s = mean_std(vals)
    return fmt.format(m) + (" ± " + fmt.format(s).lstrip("+") if len(vals) > 1 else "")


def family_tables(results: Path) -> str:
    rows = list(read_rows(results).values())
    out = []
    for fam, cells in _families().items():
        out += [f"**{fam}**", "", "| run | n | " + " | ".join(c for c, _, _ in COLS) + " | Δ PPL 8×L vs α = 0 |",
                "|---|---|" + "---|" * (len(COLS) + 1)]
        for label, over in cells:
            grp = [r for r in rows if r.overrides == over]
            ref = {k: v for k, v in (("arch", over.get("arch")), ("alpha", 0.0)) if v is not None}
            base = {r.seed: r.value(PPL8) for r in rows if r.overrides == ref}
            d = [r.value(PPL8) - base[r.seed] for r in grp
                 if over != ref and base.get(r.seed) is not None and r.value(PPL8) is not None]
            cells_txt = [_ms([v for v in (r.value(k) for r in grp) if v is not None], f) for _, k, f in COLS]
            out.append(f"| {label} | {len(grp)} | " + " | ".join(cells_txt) + f" | {_ms(d, '{:+.1f}') if d else ''} |")
        out.append("")
    return "\n".join(out)


def correlation_table(*results: Path, scores: str = "", keep=lambda r: True) -> str:
    """Pearson and Spearman r [bootstrap 95 % CI] of each predictor with each score (those whose name starts
    with `scores`), over the runs of the grids that `keep` accepts."""
    rows = [r for p in results for r in read_rows(p).values() if not r.is_pretrain and keep(r)]
    return "\n".join(correlation_rows([t for t in correlations(rows) if t["score"].startswith(scores)])) + "\n"


def trained_decoder(r) -> bool:
    loss = r.value("final_lm_loss")
    return r.overrides.get("arch", "decoder") == "decoder" and loss is not None and loss < TRAINED


def main(families: Path = Path("docs/families/results.jsonl"), zoo: Path = Path("docs/zoo/results.jsonl")) -> str:
    trained = f"Over the zoo's decoders that trained (final LM loss < {TRAINED}):"
    both = "Over the zoo and the families grid together (excess NLL; the families grid has no copy score):"
    return "\n".join([family_tables(families), "Over the zoo:", "", correlation_table(zoo),
                       trained, "", correlation_table(zoo, keep=trained_decoder),
                       both, "", correlation_table(zoo, families, scores="excess")])


if __name__ == "__main__":
    print(main(*map(Path, sys.argv[1:3])))
