"""Markdown + PNG report of a grid, rebuilt from its results.jsonl alone.

    python -m trainer.report runs/alpha            # writes runs/alpha/REPORT.md and runs/alpha/*.png

A table of mean ± std over seeds per cell group with the paired difference to its baseline group (every treatment field
at its baseline, trainer/config.py), the plots and correlations of trainer/report_plots.py."""
from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path

import numpy as np

from trainer.config import FIELD_INDEX, baselines, is_factor, is_treatment
from trainer import report_plots as plots
from trainer.report_plots import PPL_KEY, Groups, mean_std
from trainer.results import ResultRow, read_rows

# (column label, regex over flattened metric keys 'task/metric'); first match wins
HEADLINE = [
    ("LSM (SCE)", r"^olh_lsm/lsm$"),
    ("LSM (sym KL)", r"^olh_lsm/lsm_symkl$"),
    ("LSM 2–4×L (SCE)", r"^olh_lsm_2x_4x/lsm$"),
    ("LSM 2–4×L (sym KL)", r"^olh_lsm_2x_4x/lsm_symkl$"),
    ("excess NLL 4–8×L", r"^olh_ppl_len_8x/excess_4-8x$"),
    ("copy gain 1×L", r"^olh_copy/copy_gain_1x$"),
    ("copy gain 8×L", r"^olh_copy/copy_gain_8x$"),
    ("mini-LC score", r"^olh_mini_lc/score$"),
    ("mini-LC MC acc (calibrated)", r"^olh_mini_lc_mc/acc_calib$"),
    ("LongBench-E", r"^olh_longbench_e/score$"),
]


def group_key(row: ResultRow, fields: list[str]) -> tuple:
    """The row's value of each varying field: its override, else the value its run resolved to."""
    return tuple((f, _fmt(row.overrides[f] if f in row.overrides or f not in FIELD_INDEX
                          else row.setting(f, FIELD_INDEX[f][0]))) for f in fields)


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def varying_fields(rows: list[ResultRow]) -> list[str]:
    keys = sorted({k for r in rows for k in r.overrides if k not in FIELD_INDEX or is_factor(k)})
    varying = [k for k in keys if len({json.dumps(r.overrides.get(k)) for r in rows}) > 1] or keys
    return sorted(varying, key=is_treatment)  # the settings first, then the treatments compared within them


def report_lengths(row: ResultRow) -> list[int]:
    """Synthetic tasks: the longest training length, twice it, and the longest test length."""
    L, test = row.setting("seq_len", "data"), row.setting("test_len", "data")
    return sorted({n for n in (L, 2 * L, test) if n and n <= test})


def metric_columns(rows: list[ResultRow]) -> list[tuple[str, str]]:
    keys = sorted({k for r in rows for k in r.eval})
    cols = [("final LM loss", "final_lm_loss")] if any(r.final_lm_loss is not None for r in rows) else []
    for label, rx in HEADLINE:
        hit = next((k for k in keys if re.search(rx, k)), None)
        if hit:  # LSM columns name the divergence their task scored with (SCE unless recorded otherwise)
            divs = {r.scored_with.get(hit.split("/")[0], "sce") for r in rows}
            cols.append((label.replace("(SCE)", f"({', '.join(sorted(divs)).upper()})"), hit))
    for k in sorted((k for k in keys if PPL_KEY.match(k)), key=lambda k: int(PPL_KEY.match(k).group(1))):
        cols.append((f"PPL {PPL_KEY.match(k).group(1)}×L", k))
    if "mse_train" in keys:
        lens = report_lengths(rows[0])
        cols += [("MSE train lengths", "mse_train")] + [(f"MSE l={n}", f"mse@{n}") for n in lens]
        cols.append((f"clamped l={lens[-1]}", f"clamped@{lens[-1]}"))
    return cols


def is_baseline(rows: list[ResultRow]) -> bool:
    """Every treatment field with a baseline value at it (alpha = 0 and one window per step, the
    identity reparam), read from the resolved config, so a baseline set by the grid's base is found too."""
    return all(r.setting(k, FIELD_INDEX[k][0], b) == b for r in rows for k, b in baselines().items())


def baseline_for(key: tuple, groups: Groups) -> tuple | None:
    """The baseline group with the same non-treatment settings; among several (e.g. alpha = 0 crossed
    with a divergence axis, which alpha = 0 ignores), the one sharing most treatment settings."""
    rest = tuple((f, v) for f, v in key if not is_treatment(f))
    cands = [k for k in groups
             if is_baseline(groups[k]) and tuple((f, v) for f, v in k if not is_treatment(f)) == rest]
    return max(cands, key=lambda k: sum(a == b for a, b in zip(k, key)), default=None)


def paired_delta(rows: list[ResultRow], base_rows: list[ResultRow], key: str) -> tuple[float, float] | None:
    """Mean ± std of the per-seed difference to the baseline (seeds present in both)."""
    by_seed = {r.seed: r.value(key) for r in base_rows}
    d = [r.value(key) - by_seed[r.seed] for r in rows
         if r.seed in by_seed and r.value(key) is not None and by_seed[r.seed] is not None]
    return mean_std(d) if d else None


def _sort_key(key: tuple) -> tuple:
    """Groups in a stable order (results.jsonl is in completion order): unset (the base config's
    value) first, then numbers numerically, then text."""
    def rank(v: str) -> tuple:
        try:
            return (-1, 0.0, "") if v == "—" else (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)
    return tuple(rank(v) for _, v in key)


def _cell_text(vals: list[float], key: str = "") -> str:
    if key.startswith("clamped@"):
        return f"{100 * float(np.mean(vals)):.0f} %"
    m, s = mean_std(vals)
    return f"{m:.4g} ± {s:.2g}" if len(vals) > 1 else f"{m:.4g}"  # one seed: no spread to report


def _vals(rows: list[ResultRow], key: str) -> list[float]:
    return [v for v in (r.value(key) for r in rows) if v is not None]


def main_table(groups: Groups, fields: list[str], cols: list[tuple[str, str]]) -> list[str]:
    md = ["| " + " | ".join(fields + ["n"] + [c for c, _ in cols]) + " |",
          "|" + "---|" * (len(fields) + 1 + len(cols))]
    for key, grp in groups.items():
        b = baseline_for(key, groups)
        cells = []
        for _, mk in cols:
            vals = _vals(grp, mk)
            if not vals:
                cells.append("—")
                continue
            txt = _cell_text(vals, mk)
            d = paired_delta(grp, groups[b], mk) if b not in (None, key) and not mk.startswith("clamped@") else None
            if d:
                txt += f" (Δ {d[0]:+.3g} ± {d[1]:.2g})" if len(grp) > 1 else f" (Δ {d[0]:+.3g})"
            cells.append(txt)
        mark = next((f for f, _ in key if f in baselines()), None) if b == key else None
        label = [v + (" (baseline)" if f == mark else "") for f, v in key]
        md.append("| " + " | ".join(label + [str(len(grp))] + cells) + " |")
    return md + [""]


def _pretrain_table(pre_rows: list[ResultRow]) -> list[str]:
    """The grid's pretraining runs (one per seed; every cell of a seed starts from its run)."""
    if not pre_rows:
        return []
    cols = metric_columns(pre_rows)
    md = ["**Pretrained starting points** (one run per seed; every cell of a seed is fine-tuned from it):", "",
          "| n | " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * (1 + len(cols))]
    cells = [_cell_text(v, mk) if (v := _vals(pre_rows, mk)) else "—" for _, mk in cols]
    return md + [f"| {len(pre_rows)} | " + " | ".join(cells) + " |", ""]


def write_report(grid_dir: str | Path) -> Path:
    grid_dir = Path(grid_dir)
    rows = list(read_rows(grid_dir / "results.jsonl").values())
    pre_rows = [r for r in rows if r.is_pretrain]
    rows = [r for r in rows if not r.is_pretrain]
    spec = json.loads((grid_dir / "grid.json").read_text()) if (grid_dir / "grid.json").exists() else {}
    name = spec.get("name", grid_dir.name)
    md = [f"# Grid `{name}`", ""] + ([spec["description"], ""] if spec.get("description") else [])
    if not rows:
        md += ["No finished cells yet."] + _pretrain_table(pre_rows)
    else:
        fields = varying_fields(rows)
        groups: Groups = {}
        for r in rows:
            groups.setdefault(group_key(r, fields), []).append(r)
        groups = dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))
        cols = metric_columns(rows)
        md += [f"{len(rows)} runs, seeds {sorted({r.seed for r in rows})}, base config "
               f"`{json.dumps(spec.get('base', {}))}`. Cells: mean ± std over seeds (the mean alone for one seed); "
               f"Δ: paired difference to the baseline cell (α = 0, one window, identity reparam) with the same other "
               f"settings (mean ± std over seeds). Lower is better for loss, LSM, PPL and MSE; higher for scores.", ""]
        md += main_table(groups, fields, cols) + _pretrain_table(pre_rows)
        md += plots.correlation(grid_dir, rows, cols)  # (with its plot, as before the other plots)
        figs = plots.ppl_vs_length(grid_dir, name, groups, cols, pre_rows) + plots.mse_vs_length(grid_dir, groups)
        figs += plots.lsm_vs_alpha(grid_dir, name, rows, cols)
        for title, f in figs:
            md += [f"### {title}", "", f"![{title}]({f})", ""]
    if rows:
        md += ["Cells (run directories):", ""]
        md += [f"- `{r.cell_id}` seed {r.seed} {json.dumps(r.overrides)}: train {r.train['wall_s']:.0f} s, "
               f"{r.train.get('tokens_per_s') or 0:.0f} tok/s" for r in pre_rows + rows]
    out = grid_dir / "REPORT.md"
    out.write_text("\n".join(md) + "\n")
    return out


def headline_table(md_path: Path) -> str:
    """The first markdown table of a report (what `make demo` prints on the terminal)."""
    lines = itertools.dropwhile(lambda ln: not ln.startswith("|"), md_path.read_text().splitlines())
    return "\n".join(itertools.takewhile(lambda ln: ln.startswith("|"), lines))


if __name__ == "__main__":
    for d in sys.argv[1:] or ["runs"]:
        print(write_report(d))
