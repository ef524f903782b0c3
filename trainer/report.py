"""Markdown + PNG report of a grid, rebuilt from its results.jsonl alone.

    python -m trainer.report runs/alpha            # writes runs/alpha/REPORT.md and runs/alpha/*.png

Per grid: a table with mean ± std over seeds of each metric per cell group (the cells that differ only
by seed), the difference to the matching alpha = 0 baseline, and plots: perplexity vs context length,
LSM vs alpha, and LSM vs long-context score with the correlation printed beside the correlation of the
final training loss with that score (the paper's 0.85 vs 0.62 comparison).
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from trainer.config import FIELD_INDEX, is_factor, is_treatment

# (column label, regex over flattened metric keys 'task/metric'); first match wins
HEADLINE = [
    ("LSM (SCE)", r"^olh_lsm/lsm$"),
    ("LSM (sym KL)", r"^olh_lsm/lsm_symkl$"),
    ("LSM 2–4×L (SCE)", r"^olh_lsm_2x_4x/lsm$"),
    ("LSM 2–4×L (sym KL)", r"^olh_lsm_2x_4x/lsm_symkl$"),
    ("mini-LC score", r"^olh_mini_lc/score$"),
    ("mini-LC MC acc (calibrated)", r"^olh_mini_lc_mc/acc_calib$"),
    ("LongBench-E", r"^olh_longbench_e/score$"),
]
# long-context scores for the correlation, in order of preference (the paper's is LongBench-E); the
# first one whose values differ across runs is used
SCORE_PREFERENCE = ("LongBench-E", "mini-LC MC acc (calibrated)", "mini-LC score")
PPL_KEY = re.compile(r"^olh_ppl_len_(\d+)x/token_perplexity$")


def load_rows(grid_dir: Path) -> list[dict]:
    """The rows of results.jsonl, one per cell (the last line wins, as in the runner's resume)."""
    path = grid_dir / "results.jsonl"
    if not path.exists():
        return []
    rows = {}
    for x in path.read_text().splitlines():
        if x.strip():
            r = json.loads(x)
            rows[r["cell_id"]] = r
    return list(rows.values())


def is_pretrain(row: dict) -> bool:
    """A grid's pretraining run (the starting point of its cells), not a cell of the grid."""
    return row["cell_id"].startswith("pretrain-")


def group_key(row: dict, fields: list[str]) -> tuple:
    return tuple((f, _fmt(row["overrides"].get(f))) for f in fields)


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def varying_fields(rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r["overrides"] if k not in FIELD_INDEX or is_factor(k)})
    return [k for k in keys if len({json.dumps(r["overrides"].get(k)) for r in rows}) > 1] or keys


def metric_columns(rows: list[dict]) -> list[tuple[str, str]]:
    keys = sorted({k for r in rows for k in r["eval"]})
    cols = [("final LM loss", "final_lm_loss")]
    for label, rx in HEADLINE:
        hit = next((k for k in keys if re.search(rx, k)), None)
        if hit:
            cols.append((label, hit))
    for k in sorted((k for k in keys if PPL_KEY.match(k)), key=lambda k: int(PPL_KEY.match(k).group(1))):
        cols.append((f"PPL {PPL_KEY.match(k).group(1)}×L", k))
    return cols


def value(row: dict, key: str):
    v = row.get(key) if key == "final_lm_loss" else row["eval"].get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def mean_std(vals: list[float]) -> tuple[float, float]:
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def is_baseline(rows: list[dict]) -> bool:
    """alpha = 0 and one window per step (not the compute-matched --pair_windows), from the resolved
    config, so a baseline whose alpha comes from the grid's base (not its overrides) is found too."""
    return all(r["config"]["align"]["alpha"] == 0 and not r["config"]["align"].get("pair_windows") for r in rows)


def baseline_for(key: tuple, groups: dict) -> tuple | None:
    """The baseline group with the same non-alignment settings; among several (e.g. alpha = 0 crossed
    with a divergence axis, which alpha = 0 ignores), the one sharing most alignment settings."""
    rest = tuple((f, v) for f, v in key if not is_treatment(f))
    cands = [k for k in groups
             if is_baseline(groups[k]) and tuple((f, v) for f, v in k if not is_treatment(f)) == rest]
    return max(cands, key=lambda k: sum(a == b for a, b in zip(k, key)), default=None)


def paired_delta(rows: list[dict], base_rows: list[dict], key: str) -> tuple[float, float] | None:
    """Mean ± std of the per-seed difference to the baseline (seeds present in both)."""
    by_seed = {r["seed"]: value(r, key) for r in base_rows}
    d = [value(r, key) - by_seed[r["seed"]] for r in rows
         if r["seed"] in by_seed and value(r, key) is not None and by_seed[r["seed"]] is not None]
    return mean_std(d) if d else None


def _sort_key(key: tuple) -> tuple:
    """Groups in a stable order (results.jsonl is in completion order): unset (the base config's
    value) first, then numbers numerically, then text."""
    out = []
    for _, v in key:
        if v == "—":
            out.append((-1, 0.0, ""))
            continue
        try:
            out.append((0, float(v), ""))
        except ValueError:
            out.append((1, 0.0, v))
    return tuple(out)


def _cell_text(vals: list[float]) -> str:
    m, s = mean_std(vals)
    return f"{m:.4g} ± {s:.2g}" if len(vals) > 1 else f"{m:.4g}"  # one seed: no spread to report


def pearson(x, y) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def write_report(grid_dir: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid_dir = Path(grid_dir)
    rows = load_rows(grid_dir)
    pre_rows = [r for r in rows if is_pretrain(r)]
    rows = [r for r in rows if not is_pretrain(r)]
    spec = json.loads((grid_dir / "grid.json").read_text()) if (grid_dir / "grid.json").exists() else {}
    name = spec.get("name", grid_dir.name)
    md = [f"# Grid `{name}`", ""]
    if spec.get("description"):
        md += [spec["description"], ""]
    if not rows:
        md += ["No finished cells yet."]
        md += _pretrain_table(pre_rows)
        out = grid_dir / "REPORT.md"
        out.write_text("\n".join(md) + "\n")
        return out
    fields = varying_fields(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_key(r, fields), []).append(r)
    groups = dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))
    cols = metric_columns(rows)
    seeds = sorted({r["seed"] for r in rows})
    base = spec.get("base", {})
    md += [f"{len(rows)} runs, seeds {seeds}, base config `{json.dumps(base)}`. "
           f"Cells: mean ± std over seeds (the mean alone for one seed); Δ: paired difference to the α = 0 "
           f"cell with the same other settings (mean ± std over seeds). Lower is better for loss, LSM and PPL; "
           f"higher for scores.", ""]
    md.append("| " + " | ".join(fields + ["n"] + [c for c, _ in cols]) + " |")
    md.append("|" + "---|" * (len(fields) + 1 + len(cols)))
    for key, grp in groups.items():
        b = baseline_for(key, groups)
        cells = []
        for _, mk in cols:
            vals = [v for v in (value(r, mk) for r in grp) if v is not None]
            if not vals:
                cells.append("—")
                continue
            txt = _cell_text(vals)
            if b is not None and b != key:
                d = paired_delta(grp, groups[b], mk)
                if d:
                    txt += f" (Δ {d[0]:+.3g} ± {d[1]:.2g})" if len(grp) > 1 else f" (Δ {d[0]:+.3g})"
            cells.append(txt)
        base_mark = b == key
        label = [v + (" (baseline)" if base_mark and f == "alpha" else "") for f, v in key]
        md.append("| " + " | ".join(label + [str(len(grp))] + cells) + " |")
    md.append("")
    md += _pretrain_table(pre_rows)

    # --- correlation of LSM and training loss with the long-context score, across every run
    lsm_key = next((k for c, k in cols if c == "LSM (SCE)"), None)
    present = [(c, k) for want in SCORE_PREFERENCE for c, k in cols if c == want]
    spread = [(c, k) for c, k in present if len({value(r, k) for r in rows} - {None}) > 1]
    score_key = (spread or present or [(None, None)])[0][1]
    plots = []
    if lsm_key and score_key:
        pts = [(value(r, lsm_key), value(r, score_key), value(r, "final_lm_loss")) for r in rows]
        pts = [p for p in pts if None not in p]
        if pts:
            lsm_v, score_v, loss_v = zip(*pts)
            r_lsm, r_loss = pearson(lsm_v, score_v), pearson(loss_v, score_v)
            fmt = lambda r: "n/a (fewer than 3 runs or no spread)" if r is None else f"{r:+.2f}"  # noqa: E731
            md += [f"**Correlation with the long-context score** ({score_key}, {len(pts)} runs): "
                   f"LSM r = {fmt(r_lsm)}, final training loss r = {fmt(r_loss)} "
                   f"(paper, across pretrained models: |r| = 0.85 for LSM vs 0.62 for training loss).", ""]
            if r_lsm is not None or r_loss is not None:
                fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
                ax[0].scatter(lsm_v, score_v)
                ax[0].set(xlabel="LSM (SCE)", ylabel=score_key, title=f"LSM vs score (r = {fmt(r_lsm)})")
                ax[1].scatter(loss_v, score_v, color="tab:orange")
                ax[1].set(xlabel="final training LM loss", ylabel=score_key,
                          title=f"loss vs score (r = {fmt(r_loss)})")
                fig.tight_layout()
                fig.savefig(grid_dir / "lsm_vs_score.png", dpi=110)
                plt.close(fig)
                plots.append(("LSM and training loss vs long-context score", "lsm_vs_score.png"))

    # --- perplexity vs context length, one line per group
    ppl_cols = [(int(PPL_KEY.match(k).group(1)), k) for _, k in cols if PPL_KEY.match(k)]
    if ppl_cols:
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        series = [(", ".join(f"{f}={v}" for f, v in key), grp, {}) for key, grp in groups.items()]
        if pre_rows:  # where the cells started from
            series.append(("pretrained start", pre_rows, {"color": "black", "linestyle": "--"}))
        for label, grp, style in series:
            xs, ms, ss = [], [], []
            for mult, k in ppl_cols:
                vals = [v for v in (value(r, k) for r in grp) if v is not None]
                if vals:
                    m, s = mean_std(vals)
                    xs.append(mult), ms.append(m), ss.append(s)
            if xs:
                ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=label, **style)
        ax.set(xscale="log", xlabel="context length (× training length L)", ylabel="token perplexity",
               title=f"{name}: perplexity vs context length")
        ax.set_xticks([m for m, _ in ppl_cols], [f"{m}×" for m, _ in ppl_cols])
        ax.minorticks_off()
        ax.axvspan(0.9, 1.1, color="grey", alpha=0.15)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(grid_dir / "ppl_vs_length.png", dpi=110)
        plt.close(fig)
        plots.append(("Perplexity vs context length", "ppl_vs_length.png"))

    # --- LSM vs alpha
    if lsm_key and len({r["config"]["align"]["alpha"] for r in rows}) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        a = [r["config"]["align"]["alpha"] for r in rows if value(r, lsm_key) is not None]
        y = [value(r, lsm_key) for r in rows if value(r, lsm_key) is not None]
        ax.scatter(a, y, alpha=0.7)
        uniq = sorted(set(a))
        ax.plot(uniq, [np.mean([yy for aa, yy in zip(a, y) if aa == u]) for u in uniq], color="tab:red")
        ax.set(xlabel="α", ylabel="LSM (SCE)", title=f"{name}: LSM vs α")
        fig.tight_layout()
        fig.savefig(grid_dir / "lsm_vs_alpha.png", dpi=110)
        plt.close(fig)
        plots.append(("LSM vs α", "lsm_vs_alpha.png"))

    for title, f in plots:
        md += [f"### {title}", "", f"![{title}]({f})", ""]
    md += ["Cells (run directories):", ""]
    md += [f"- `{r['cell_id']}` seed {r['seed']} {json.dumps(r['overrides'])}: train {r['train']['wall_s']:.0f} s, "
           f"{r['train']['tokens_per_s'] or 0:.0f} tok/s" for r in pre_rows + rows]
    out = grid_dir / "REPORT.md"
    out.write_text("\n".join(md) + "\n")
    return out


def _pretrain_table(pre_rows: list[dict]) -> list[str]:
    """The grid's pretraining runs (one per seed; every cell of a seed starts from its run)."""
    if not pre_rows:
        return []
    cols = metric_columns(pre_rows)
    md = ["**Pretrained starting points** (one run per seed; every cell of a seed is fine-tuned from it):", "",
          "| n | " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * (1 + len(cols))]
    cells = []
    for _, mk in cols:
        vals = [v for v in (value(r, mk) for r in pre_rows) if v is not None]
        cells.append(_cell_text(vals) if vals else "—")
    return md + [f"| {len(pre_rows)} | " + " | ".join(cells) + " |", ""]


def headline_table(md_path: Path) -> str:
    """The first markdown table of a report (what `make demo` prints on the terminal)."""
    tab = []
    for ln in md_path.read_text().splitlines():
        if ln.startswith("|"):
            tab.append(ln)
        elif tab:
            break
    return "\n".join(tab)


if __name__ == "__main__":
    for d in sys.argv[1:] or ["runs"]:
        print(write_report(d))
