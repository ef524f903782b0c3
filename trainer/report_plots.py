"""The statistics and PNG plots of a grid report (trainer/report.py); each plot returns [(title, file)] of what it drew."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from trainer.config import is_treatment
from trainer.results import ResultRow

# what the correlation table relates: each predictor with each long-context score a grid has
PREDICTORS = (("LSM (SCE)", "olh_lsm/lsm"), ("LSM (sym KL)", "olh_lsm/lsm_symkl"), ("final training loss", "final_lm_loss"))
SCORES = (("excess NLL 2–4×L", "olh_ppl_len_8x/excess_2-4x"), ("excess NLL 4–8×L", "olh_ppl_len_8x/excess_4-8x"),
          *((f"copy gain {k}×L", f"olh_copy/copy_gain_{k}x") for k in (1, 2, 4, 8)),
          ("LongBench-E", "olh_longbench_e/score"), ("mini-LC MC acc (calibrated)", "olh_mini_lc_mc/acc_calib"),
          ("mini-LC score", "olh_mini_lc/score"))
N_BOOT = 2000
PPL_KEY = re.compile(r"^olh_ppl_len_(\d+)x/token_perplexity$")
Groups = dict[tuple, list[ResultRow]]


def mean_std(vals: list[float]) -> tuple[float, float]:
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def pearson(x, y) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return None if len(x) < 3 or x.std() == 0 or y.std() == 0 else float(np.corrcoef(x, y)[0, 1])


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


def spearman(x, y) -> float | None:
    from scipy.stats import rankdata
    return pearson(rankdata(x), rankdata(y))


def _row_pearson(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair; NaN where a row has no spread."""
    Xc, Yc = X - X.mean(1, keepdims=True), Y - Y.mean(1, keepdims=True)
    den = np.sqrt((Xc ** 2).sum(1) * (Yc ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (Xc * Yc).sum(1) / den, np.nan)


def bootstrap_ci(x, y, ranks: bool = False, n: int = N_BOOT, seed: int = 0) -> tuple[float, float] | None:
    """95 % percentile interval of Pearson r (of ranks: Spearman) over resamples of the runs (with
    replacement); resamples without spread are skipped, and None when more than half have none."""
    from scipy.stats import rankdata
    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = np.random.default_rng(seed).integers(0, len(x), (n, len(x)))
    X, Y = x[idx], y[idx]
    r = _row_pearson(rankdata(X, axis=1), rankdata(Y, axis=1)) if ranks else _row_pearson(X, Y)
    r = r[~np.isnan(r)]
    return (float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))) if len(r) > n // 2 else None


def correlations(rows) -> list[dict]:
    """Pearson and Spearman r (with bootstrap CIs) of each predictor with each long-context score present."""
    out = []
    for score, sk in SCORES:
        for pred, pk in PREDICTORS:
            pts = [(x, y) for x, y in ((r.value(pk), r.value(sk)) for r in rows) if x is not None and y is not None]
            if len(pts) < 3 or pearson(*zip(*pts)) is None:
                continue
            x, y = zip(*pts)
            out.append({"score": score, "score_key": sk, "predictor": pred, "predictor_key": pk, "n": len(pts),
                        "pearson": pearson(x, y), "pearson_ci": bootstrap_ci(x, y),
                        "spearman": spearman(x, y), "spearman_ci": bootstrap_ci(x, y, ranks=True)})
    return out


def _r(v, ci) -> str:
    return "n/a" if v is None else f"{v:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def correlation_rows(table: list[dict]) -> list[str]:
    """The markdown table of correlations(): a predictor of long-context ability has r > 0 with excess NLL
    (lower is better) and r < 0 with copy gain (higher is better)."""
    return ["| long-context score | predictor | n | Pearson r [95 % CI] | Spearman ρ [95 % CI] |", "|---|---|---|---|---|",
            *(f"| {t['score']} | {t['predictor']} | {t['n']} | {_r(t['pearson'], t['pearson_ci'])} | "
              f"{_r(t['spearman'], t['spearman_ci'])} |" for t in table)]


def correlation(grid_dir: Path, rows, cols) -> list[str]:
    """Does LSM predict long-context ability better than the training loss? A table over every run of the
    grid (also written to correlations.json) and scatter plots of LSM and loss against each score."""
    table = correlations(rows)
    if not table:
        return []
    (grid_dir / "correlations.json").write_text(json.dumps(table, indent=1) + "\n")
    md = [f"**Does LSM predict long-context ability?** Correlation over the {max(t['n'] for t in table)} runs of "
          f"this grid, with 95 % bootstrap intervals ({N_BOOT} resamples of the runs). Paper, across pretrained "
          "models: |r| = 0.85 for LSM vs 0.62 for training loss.", "", *correlation_rows(table)]
    scores = list(dict.fromkeys((t["score"], t["score_key"]) for t in table))
    preds = list(dict.fromkeys((t["predictor"], t["predictor_key"]) for t in table))
    fig, ax = _plt().subplots(len(preds), len(scores), figsize=(2.6 * len(scores) + 1, 2.4 * len(preds)), squeeze=False)
    for i, (pred, pk) in enumerate(preds):
        for j, (score, sk) in enumerate(scores):
            pts = [(r.value(pk), r.value(sk)) for r in rows if r.value(pk) is not None and r.value(sk) is not None]
            if pts:
                ax[i][j].scatter(*zip(*pts), s=12, color=f"C{i}")
            ax[i][j].set_xlabel(pred, fontsize=8)
            ax[i][j].set_ylabel(score, fontsize=8)
    _save(fig, grid_dir / "lsm_vs_score.png")
    title = "LSM and training loss vs long-context scores"
    return md + ["", f"### {title}", "", f"![{title}](lsm_vs_score.png)", ""]


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
