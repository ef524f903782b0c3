"""The statistics and PNG plots of a grid report (trainer/report.py); each plot returns [(title, file)] of what it drew."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from trainer.config import is_treatment
from trainer.results import ResultRow

# long-context scores for the correlation, in order of preference (the paper's is LongBench-E); the
# first one whose values differ across runs is used
SCORE_PREFERENCE = ("LongBench-E", "mini-LC MC acc (calibrated)", "mini-LC score")
PPL_KEY = re.compile(r"^olh_ppl_len_(\d+)x/token_perplexity$")
Groups = dict[tuple, list[ResultRow]]


def mean_std(vals: list[float]) -> tuple[float, float]:
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def pearson(x, y) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def _curve(ax, rows, xs_keys, label, band: bool = False, **style) -> None:
    """One group at each x: mean ± std over seeds, or (band) the mean and the min-max range of the seeds."""
    pts = [(x, [v for v in (r.value(k) for r in rows) if v is not None]) for x, k in xs_keys]
    pts = [(x, vals) for x, vals in pts if vals]
    if not pts:
        return
    xs, ms = [x for x, _ in pts], [mean_std(v)[0] for _, v in pts]
    if band:
        line, = ax.plot(xs, ms, marker=".", ms=3, lw=1.4, label=label, **style)
        ax.fill_between(xs, [min(v) for _, v in pts], [max(v) for _, v in pts], color=line.get_color(), alpha=0.15, lw=0)
    else:
        ax.errorbar(xs, ms, yerr=[mean_std(v)[1] for _, v in pts], marker="o", ms=3, capsize=3, label=label, **style)


def correlation(grid_dir: Path, rows, cols) -> list[str]:
    """LSM and final training loss vs the long-context score, across every run: markdown, and a plot."""
    lsm_key = next((k for _, k in cols if k == "olh_lsm/lsm"), None)
    present = [(c, k) for want in SCORE_PREFERENCE for c, k in cols if c == want]
    spread = [(c, k) for c, k in present if len({r.value(k) for r in rows} - {None}) > 1]
    score_key = (spread or present or [(None, None)])[0][1]
    pts = [(r.value(lsm_key), r.value(score_key), r.value("final_lm_loss")) for r in rows] if lsm_key and score_key else []
    pts = [p for p in pts if None not in p]
    if not pts:
        return []
    lsm_v, score_v, loss_v = zip(*pts)
    r_lsm, r_loss = pearson(lsm_v, score_v), pearson(loss_v, score_v)
    fmt = lambda r: "n/a (fewer than 3 runs or no spread)" if r is None else f"{r:+.2f}"  # noqa: E731
    md = [f"**Correlation with the long-context score** ({score_key}, {len(pts)} runs): "
          f"LSM r = {fmt(r_lsm)}, final training loss r = {fmt(r_loss)} "
          f"(paper, across pretrained models: |r| = 0.85 for LSM vs 0.62 for training loss).", ""]
    if r_lsm is not None or r_loss is not None:
        fig, ax = _plt().subplots(1, 2, figsize=(9, 3.6))
        ax[0].scatter(lsm_v, score_v)
        ax[0].set(xlabel=next(c for c, k in cols if k == lsm_key), ylabel=score_key,
                  title=f"LSM vs score (r = {fmt(r_lsm)})")
        ax[1].scatter(loss_v, score_v, color="tab:orange")
        ax[1].set(xlabel="final training LM loss", ylabel=score_key, title=f"loss vs score (r = {fmt(r_loss)})")
        _save(fig, grid_dir / "lsm_vs_score.png")
        title = "LSM and training loss vs long-context score"
        md += [f"### {title}", "", f"![{title}](lsm_vs_score.png)", ""]
    return md


def ppl_vs_length(grid_dir: Path, name: str, groups: Groups, cols, pre_rows) -> list[tuple[str, str]]:
    ppl_cols = [(int(PPL_KEY.match(k).group(1)), k) for _, k in cols if PPL_KEY.match(k)]
    if not ppl_cols:
        return []
    fig, ax = _plt().subplots(figsize=(7.5, 4.2))
    for key, grp in groups.items():
        _curve(ax, grp, ppl_cols, ", ".join(f"{f}={v}" for f, v in key))
    if pre_rows:  # where the cells started from
        _curve(ax, pre_rows, ppl_cols, "pretrained start", color="black", linestyle="--")
    ax.set(xscale="log", xlabel="context length (× training length L)", ylabel="token perplexity",
           title=f"{name}: perplexity vs context length")
    ax.set_xticks([m for m, _ in ppl_cols], [f"{m}×" for m, _ in ppl_cols])
    ax.minorticks_off()
    ax.axvspan(0.9, 1.1, color="grey", alpha=0.15)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, grid_dir / "ppl_vs_length.png")
    return [("Perplexity vs context length", "ppl_vs_length.png")]


def mse_vs_length(grid_dir: Path, groups: Groups) -> list[tuple[str, str]]:
    """Synthetic tasks: one PNG per task, MSE vs test length; a panel per setting of the non-treatment
    fields (arch, pe, ...) with one line per treatment (reparam, alpha) when there are many groups."""
    out = []
    for task in dict.fromkeys(g[0].setting("task", "data") for g in groups.values()):
        sel = {k: g for k, g in groups.items() if g[0].setting("task", "data") == task and "mse_train" in g[0].eval}
        if not sel:
            continue
        rest = lambda k: tuple((f, v) for f, v in k if not is_treatment(f) and f != "task")  # noqa: E731
        panels = list(dict.fromkeys(rest(k) for k in sel)) if len(sel) > 8 else [None]
        ncol = min(3, len(panels))
        fig, axes = _plt().subplots(-(-len(panels) // ncol), ncol, figsize=(6 * ncol, 4.4 * -(-len(panels) // ncol)),
                                    sharey=True, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        r0 = next(iter(sel.values()))[0]
        lens = [(n, f"mse@{n}") for n in range(1, r0.setting("test_len", "data") + 1)]
        shown = [i for i in range(len(next(iter(sel)))) if len({k[i] for k in sel}) > 1]  # what tells lines apart
        for ax, panel in zip(axes.flat, panels):
            for k, g in sel.items():
                if panel is None or rest(k) == panel:
                    label = " ".join(f"{k[i][0]}={k[i][1]}" for i in shown if panel is None or k[i] not in panel)
                    _curve(ax, g, lens, label or task, band=True)
            ax.axvspan(r0.setting("min_len", "data"), r0.setting("seq_len", "data"), color="tab:red", alpha=0.12, lw=0)
            ax.set(yscale="log", xlabel="test length l", title=f"{task} prediction" +
                   (": " + ", ".join(f"{f}={v}" for f, v in panel) if panel else ""))
            ax.legend(fontsize=7)
        for row in axes:
            row[0].set_ylabel("MSE (target space): mean, band min-max over seeds")
        _save(fig, grid_dir / f"{task}.png")
        out.append((f"{task} prediction: error vs test length (training lengths shaded)", f"{task}.png"))
    return out


def lsm_vs_alpha(grid_dir: Path, name: str, rows, cols) -> list[tuple[str, str]]:
    lsm_key = next((k for _, k in cols if k == "olh_lsm/lsm"), None)
    if not lsm_key or len({r.setting("alpha", "align") for r in rows}) < 2:
        return []
    fig, ax = _plt().subplots(figsize=(5, 3.5))
    a = [r.setting("alpha", "align") for r in rows if r.value(lsm_key) is not None]
    y = [r.value(lsm_key) for r in rows if r.value(lsm_key) is not None]
    ax.scatter(a, y, alpha=0.7)
    uniq = sorted(set(a))
    ax.plot(uniq, [np.mean([yy for aa, yy in zip(a, y) if aa == u]) for u in uniq], color="tab:red")
    ax.set(xlabel="α", ylabel=next(c for c, k in cols if k == lsm_key), title=f"{name}: LSM vs α")
    _save(fig, grid_dir / "lsm_vs_alpha.png")
    return [("LSM vs α", "lsm_vs_alpha.png")]
