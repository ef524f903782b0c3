"""Ablation runner and report: a two-cell grid end to end (train -> lm-eval -> results.jsonl -> REPORT.md),
resume without retraining, re-evaluation of one cell, clear errors for malformed specs and failed cells,
and the report's statistics from a hand-written results table."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from trainer.ablate import Grid, cell_id, load_spec, main
from trainer.results import flatten_results, scored_with
from trainer.report import headline_table, write_report

REPO = Path(__file__).parent.parent

# two tiny cells (alpha 0 vs 0.1, one seed, 4 steps), scored on LSM and PPL-by-length (the mini suite
# needs l_train >= 64 and the tiny preset trains at 32)
TINY_GRID = """
name: tiny
description: two tiny cells for the tests
base: {preset: tiny, max_steps: 4, log_every: 2}
seeds: [0]
axes:
  alpha: [0.0, 0.1]
eval:
  tasks: [olh_lsm, olh_ppl_len]
  limit: 2
  batch_size: 4
"""


def _write(tmp_path, text, name="grid.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _rows(grid_dir):
    return [json.loads(x) for x in (grid_dir / "results.jsonl").read_text().splitlines() if x.strip()]


def _commands(log_text: str) -> list[str]:
    """The commands a cell.log records (the runner writes '$ CMD' before each)."""
    return [ln for ln in log_text.splitlines() if ln.startswith("$ ")]


def test_two_cell_grid_end_to_end_resume_and_reevaluate(tmp_path, capsys):
    spec = _write(tmp_path, TINY_GRID)
    root = tmp_path / "runs"
    args = [spec, "--root", str(root), "--jobs", "2", "--threads", "1"]
    assert main(args) == 0
    gdir = root / "tiny"
    rows = _rows(gdir)
    assert len(rows) == 2 and {r["overrides"]["alpha"] for r in rows} == {0.0, 0.1}
    for r in rows:
        assert r["train"]["steps"] == 4 and r["final_lm_loss"] > 0
        ev = r["eval"]
        assert ev["olh_lsm/lsm"] > 0 and ev["olh_lsm/lsm_symkl"] >= 0
        for m in (1, 2, 4, 8):
            assert ev[f"olh_ppl_len_{m}x/token_perplexity"] > 1
        assert all(v is None or math.isfinite(v) for v in ev.values())
        assert r["config"]["align"]["alpha"] == r["overrides"]["alpha"]

    md = (gdir / "REPORT.md").read_text()
    table = headline_table(gdir / "REPORT.md").splitlines()
    assert table[0].startswith("| alpha | n | final LM loss | LSM (SCE) | LSM (sym KL) | excess NLL 4–8×L | PPL 1×L")
    assert len(table) == 4  # header, rule, two groups
    assert "(baseline)" in table[2] and "Δ" not in table[2]  # alpha 0 sorts first
    assert table[3].startswith("| 0.1 |") and "(Δ " in table[3]
    for png in ("ppl_vs_length.png", "lsm_vs_alpha.png"):
        assert (gdir / png).stat().st_size > 1000 and f"]({png})" in md

    # rerun: both cells are done, nothing is trained or evaluated again
    by_alpha = {r["overrides"]["alpha"]: Path(r["run_dir"]) for r in rows}
    logs = {a: (d / "cell.log").read_text() for a, d in by_alpha.items()}
    weights = {a: (d / "checkpoint" / "model.safetensors").stat().st_mtime_ns for a, d in by_alpha.items()}
    capsys.readouterr()
    assert main(args) == 0
    assert "2 runs, 2 already done, 0 to run" in capsys.readouterr().out
    assert {a: (d / "cell.log").read_text() for a, d in by_alpha.items()} == logs
    assert len(_rows(gdir)) == 2

    # drop the alpha = 0.1 row: only that cell is evaluated again, from its existing checkpoint
    keep = [json.dumps(r) for r in rows if r["overrides"]["alpha"] == 0.0]
    (gdir / "results.jsonl").write_text("\n".join(keep) + "\n")
    assert main(args) == 0
    assert "2 runs, 1 already done, 1 to run" in capsys.readouterr().out
    assert (by_alpha[0.0] / "cell.log").read_text() == logs[0.0]
    new = _commands((by_alpha[0.1] / "cell.log").read_text())[len(_commands(logs[0.1])):]
    assert len(new) == 1 and "olharness.cli" in new[0]  # evaluated, not trained
    assert {a: (d / "checkpoint" / "model.safetensors").stat().st_mtime_ns for a, d in by_alpha.items()} == weights
    rows2 = _rows(gdir)
    assert len(rows2) == 2 and {r["cell_id"] for r in rows2} == {r["cell_id"] for r in rows}


def test_dry_run_lists_cells(tmp_path, capsys):
    spec = _write(tmp_path, TINY_GRID)
    assert main([spec, "--root", str(tmp_path / "runs"), "--dry_run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and '{"alpha": 0.0}' in lines[0] and '{"alpha": 0.1}' in lines[1]
    assert all(ln.split()[1] == "seed=0" for ln in lines)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_dry_run_pretrain_grid_ids_do_not_depend_on_root(tmp_path, capsys):
    """grids/context_extension.yaml: one pretraining run per seed first, every cell starts from its
    seed's run; cell ids hash the pretraining run by id, so --root (absolute, relative, ...) keeps them."""
    grid = str(REPO / "grids" / "context_extension.yaml")
    outs = []
    for root in (tmp_path / "a", tmp_path / "b" / ".." / "c"):
        assert main([grid, "--root", str(root), "--dry_run"]) == 0
        outs.append(capsys.readouterr().out.strip().splitlines())
    lines = outs[0]
    assert len(lines) == 3 + 3 * (3 * 2 + 3)  # 3 pretraining runs, then 9 cells x 3 seeds
    assert all(ln.startswith("pretrain-") for ln in lines[:3])
    assert not any(ln.startswith("pretrain-") for ln in lines[3:])
    assert [ln.split()[0] for ln in outs[0]] == [ln.split()[0] for ln in outs[1]]
    spec = load_spec(grid)
    g = Grid(spec, tmp_path / "a")
    pre = {c["seed"]: cfg.train.out for c, cfg, _ in g.pretrain_cells()}
    for cell, cfg, cid in g.cells():
        assert cfg.train.init_from == pre[cell["seed"]] and cfg.data.seq_len == 256
    assert all(cfg.data.seq_len == 64 for _, cfg, _ in g.pretrain_cells())


def test_int_and_float_spellings_are_one_cell(tmp_path):
    spec = load_spec(_write(tmp_path, TINY_GRID.replace("alpha: [0.0, 0.1]", "alpha: [0, 0.0, 0.1]")))
    cells = Grid(spec, tmp_path).cells()
    assert len(cells) == 2 and len({cid for *_, cid in cells}) == 2
    assert cell_id(cells[0][1]) == cells[0][2]


# ids of grids/demo.yaml's cells: a change to what a cell id hashes would make every finished grid rerun
DEMO_IDS = ["b94cf3df73c9", "e118963fd5b2", "a5f56f1809f2", "8c094c03c726"]


def test_cell_ids_are_stable_and_ignore_new_fields_at_their_default(tmp_path, monkeypatch):
    """A cell id hashes only the fields that differ from the defaults: a release that adds a config
    field with a default keeps every finished cell's id; setting the new field makes a new cell."""
    import dataclasses

    from trainer import config
    spec = load_spec(REPO / "grids" / "demo.yaml")
    assert [cid for *_, cid in Grid(spec, tmp_path).cells()] == DEMO_IDS
    new = dataclasses.field(default=0.5)
    new.name, new.type = "new_knob", "float"
    monkeypatch.setitem(config.FIELD_INDEX, "new_knob", ("align", new))
    monkeypatch.setattr(config.AlignConfig, "new_knob", 0.5, raising=False)
    assert [cid for *_, cid in Grid(spec, tmp_path).cells()] == DEMO_IDS
    spec.axes["new_knob"] = [0.7]
    assert not {cid for *_, cid in Grid(spec, tmp_path).cells()} & set(DEMO_IDS)
    # runtime fields (paths, threads, logging) are not part of the id
    cfg = Grid(load_spec(REPO / "grids" / "demo.yaml"), tmp_path).cells()[0][1]
    cfg.train.threads, cfg.train.log_every, cfg.train.out = 7, 3, "elsewhere"
    assert cell_id(cfg) == DEMO_IDS[0]


@pytest.mark.parametrize("grid,n_done", [("demo", 4), ("context_extension", 3 + 3)])
def test_rows_written_before_field_roles_keep_their_cells_done(tmp_path, grid, n_done):
    """tests/assets/legacy_results: rows as the runner wrote them when a cell id hashed every config
    field (the ids of docs/demo/REPORT.md and docs/context_extension/REPORT.md; for the pretraining
    grid the 3 pretraining runs and 3 cells). Rerunning those grids must not retrain them."""
    g = Grid(load_spec(REPO / "grids" / f"{grid}.yaml"), tmp_path)
    g.dir.mkdir(parents=True)
    legacy = (REPO / "tests" / "assets" / "legacy_results" / f"{grid}.jsonl").read_text()
    assert "f5efc773c4ff" in legacy or "pretrain-" in legacy
    (g.dir / "results.jsonl").write_text(legacy)
    done = g.done()
    cells = [cid for *_, cid in g.pretrain_cells() + g.cells()]
    assert sum(cid in done for cid in cells) == n_done
    assert not set(cells) & {json.loads(x)["cell_id"] for x in legacy.splitlines()}  # the ids did change


BAD_SPECS = {
    "unknown top-level key": (TINY_GRID + "bogus: 1\n", "unknown key 'bogus'; valid: name, description, base"),
    "unknown config field in base": (TINY_GRID.replace("max_steps: 4", "max_stepz: 4"),
                                     "unknown config field 'max_stepz'"),
    "unknown config field in axes": (TINY_GRID.replace("alpha: [0.0, 0.1]", "alphaa: [0.0, 0.1]"),
                                     "unknown config field 'alphaa'"),
    "empty axis": (TINY_GRID.replace("alpha: [0.0, 0.1]", "alpha: []"), "axis 'alpha' is empty"),
    "bad YAML": (TINY_GRID + "axes: [unclosed\n", "is not valid YAML"),
    "unknown preset": (TINY_GRID.replace("preset: tiny", "preset: huge"), "unknown preset 'huge'"),
    "wrong value type": (TINY_GRID.replace("alpha: [0.0, 0.1]", "alpha: [[0.1]]"), "'alpha' expects float"),
    "unknown eval key": (TINY_GRID.replace("limit: 2", "limitt: 2"), "unknown key 'eval.limitt'; valid: tasks, metadata, limit, batch_size"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_malformed_spec_gives_one_error_line(tmp_path, capsys, case):
    text, msg = BAD_SPECS[case]
    assert main([_write(tmp_path, text), "--root", str(tmp_path / "runs"), "--dry_run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err


def test_bad_json_and_missing_spec(tmp_path, capsys):
    assert main([_write(tmp_path, '{"name": "x",', "g.json")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read grid spec" in err[0]


def test_failed_cell_names_its_log(tmp_path, capsys):
    # a window longer than the fixture corpus: training fails with the trainer's own error line
    spec = _write(tmp_path, TINY_GRID.replace("alpha: [0.0, 0.1]", "alpha: [0.0]")
                  .replace("max_steps: 4", "max_steps: 4, seq_len: 200000, max_positions: 300000"))
    assert main([spec, "--root", str(tmp_path / "runs"), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cell ") and ": training failed (error: corpus has " in err
    log = Path(err.rsplit("log: ", 1)[1].split(";")[0].strip())
    assert log.name == "cell.log" and log.is_file() and "trainer.train" in log.read_text()
    assert not (tmp_path / "runs" / "tiny" / "results.jsonl").exists()


def test_flatten_results_real_shapes():
    res = {"results": {
        "olh_lsm": {"alias": "olh_lsm", "sample_len": 4, "lsm,none": 12.5, "lsm_stderr,none": 0.1},
        "olh_mini_lc": {"alias": "olh mini", "score,none": 0.0, "score_stderr,none": "N/A",
                        "score_8x,none": float("nan"), "sample_count": {"score,none": 6}},
    }}
    res["configs"] = {"olh_lsm": {"metadata": {"divergence": "kl", "kl_direction": "short_long"}},
                      "olh_mini_lc": {"metadata": {"l_train": 64}}}
    flat = flatten_results(res)
    assert flat["olh_lsm/lsm"] == 12.5 and flat["olh_mini_lc/score"] == 0.0
    assert all(isinstance(v, float) or v is None for v in flat.values())
    assert scored_with(res) == {"olh_lsm": "kl short_long"}
    assert flat["olh_mini_lc/score_8x"] is None  # empty bucket: null in results.jsonl, not NaN
    assert not any("stderr" in k or "alias" in k or "sample_count" in k for k in flat)


# ----------------------------------------------------------------------------------- report (no training)
def _row(cid, alpha, seed, lsm, score, loss, ppl, pair=False, over=None):
    over = over if over is not None else {"alpha": alpha, **({"pair_windows": True} if pair else {})}
    ev = {"olh_lsm/lsm": lsm, "olh_lsm/lsm_symkl": lsm / 10, "olh_mini_lc/score": score,
          **{f"olh_ppl_len_{m}x/token_perplexity": p for m, p in zip((1, 2, 4, 8), ppl)}}
    return {"cell_id": cid, "grid": "hand", "overrides": over, "seed": seed,
            "config": {"align": {"alpha": alpha, "pair_windows": pair}}, "train": {"wall_s": 1.0, "tokens_per_s": 10.0},
            "final_lm_loss": loss, "eval": ev, "wall_s": 2.0, "run_dir": f"/x/{cid}"}


def test_write_report_statistics(tmp_path):
    lsm0, lsm1, lsmp = [10.0, 12.0, 14.0], [9.0, 10.0, 11.0], [11.0, 12.5, 13.0]
    score0, score1, scorep = [20.0, 15.0, 12.0], [22.0, 21.0, 18.0], [19.0, 16.0, 13.0]
    loss0, loss1, lossp = [3.0, 3.1, 3.2], [3.05, 3.0, 3.3], [3.01, 3.2, 3.1]
    rows = []
    for s in range(3):
        # results.jsonl is in completion order: the treated cell may come first
        rows.append(_row(f"b{s}", 0.1, s, lsm1[s], score1[s], loss1[s], [50, 60, 90, float("nan")]))
        rows.append(_row(f"a{s}", 0.0, s, lsm0[s], score0[s], loss0[s], [50, 70, 100, 150]))
        rows.append(_row(f"c{s}", 0.0, s, lsmp[s], scorep[s], lossp[s], [49, 69, 99, 149], pair=True))
    rows.append(_row("pretrain-p0", 0.0, 0, 8.0, 5.0, 2.0, [40, 80, 160, 320],
                     over={"stage": "pretrain", "seq_len": 64}))
    rows[0]["eval"]["olh_lsm/lsm"] = 999.0  # a stale line for b0, superseded by the next one (last wins)
    lines = [json.dumps(r) for r in rows]
    fixed = dict(rows[0], eval=dict(rows[0]["eval"], **{"olh_lsm/lsm": lsm1[0]}))
    lines.insert(1, json.dumps(fixed))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "grid.json").write_text(json.dumps({"name": "hand", "base": {"preset": "tiny"}}))

    md_path = write_report(tmp_path)
    md = md_path.read_text()
    table = headline_table(md_path).splitlines()
    assert table[0] == ("| alpha | pair_windows | n | final LM loss | LSM (SCE) | LSM (sym KL) | mini-LC score | "
                        "PPL 1×L | PPL 2×L | PPL 4×L | PPL 8×L |")
    by_first = {ln.split("|")[1].strip() + "/" + ln.split("|")[2].strip(): ln for ln in table[2:]}
    assert len(table) == 5 and list(by_first) == ["0 (baseline)/False", "0/True", "0.1/False"]
    base, pair, treat = (by_first[k].split(" | ") for k in by_first)
    assert base[4] == "12 ± 2" and treat[4] == "10 ± 1 (Δ -2 ± 1)"  # LSM: mean ± std, paired Δ
    d = np.array(lsmp) - np.array(lsm0)
    assert pair[4] == f"{np.mean(lsmp):.4g} ± {np.std(lsmp, ddof=1):.2g} (Δ {d.mean():+.3g} ± {d.std(ddof=1):.2g})"
    assert treat[-1].startswith("— ") or treat[-1] == "— |"  # PPL 8x all NaN for alpha 0.1
    assert base[-1].startswith("150 ± 0")

    allscore, alllsm, allloss = score0 + score1 + scorep, lsm0 + lsm1 + lsmp, loss0 + loss1 + lossp
    r_lsm = np.corrcoef(alllsm, allscore)[0, 1]
    r_loss = np.corrcoef(allloss, allscore)[0, 1]
    def ranks(a):  # average ranks (ties share theirs), 1-based
        return [sum(b < v for b in a) + (sum(b == v for b in a) + 1) / 2 for v in a]
    rho_lsm = np.corrcoef(ranks(alllsm), ranks(allscore))[0, 1]
    corr = {(t["predictor"], t["score"]): t for t in json.loads((tmp_path / "correlations.json").read_text())}
    lsm_row, loss_row = corr[("LSM (SCE)", "mini-LC score")], corr[("final training loss", "mini-LC score")]
    assert lsm_row["n"] == loss_row["n"] == 9 and "0.85" in md
    assert lsm_row["pearson"] == pytest.approx(r_lsm) and loss_row["pearson"] == pytest.approx(r_loss)
    assert lsm_row["spearman"] == pytest.approx(rho_lsm)
    lo, hi = lsm_row["pearson_ci"]
    assert lo < r_lsm < hi and hi - lo < 1.5  # a percentile interval around the estimate, not [-1, 1]
    assert f"| mini-LC score | LSM (SCE) | 9 | {r_lsm:+.2f} [{lo:+.2f}, {hi:+.2f}] |" in md
    assert "**Pretrained starting points**" in md and "999" not in md
    for png in ("lsm_vs_score.png", "ppl_vs_length.png", "lsm_vs_alpha.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_write_report_single_seed_and_empty(tmp_path):
    assert "No finished cells yet." in write_report(tmp_path).read_text()
    rows = [_row("a", 0.0, 0, 10.0, 1.0, 3.0, [5, 6, 7, 8]), _row("b", 0.1, 0, 9.0, 1.0, 3.0, [5, 6, 7, 8])]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "| LSM (SCE) |" in write_report(tmp_path).read_text()  # nothing recorded: the task's default
    for r in rows:  # the LSM column is labelled with the divergence the task scored with
        r["scored_with"] = {"olh_lsm": "js"}
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(tmp_path).read_text()
    assert "| LSM (JS) |" in md and "LSM (SCE)" not in md
    assert "| 0.1 | 1 |" in md and "| 9 (Δ -1) |" in md  # one seed: no ± 0
    assert "Does LSM predict" not in md  # two runs: no correlation to report


def test_interrupted_training_is_resumed_not_evaluated(tmp_path, monkeypatch):
    """Ctrl-C makes the trainer save a checkpoint and a summary.json with steps < max_steps: the runner
    must resume that training (never score a half-trained model), and say so if it stops short again."""
    spec = load_spec(_write(tmp_path, TINY_GRID.replace("alpha: [0.0, 0.1]", "alpha: [0.0]")))
    grid = Grid(spec, tmp_path / "runs")
    (cell, cfg, cid), = grid.cells()
    out = Path(cfg.train.out)
    (out / "checkpoint").mkdir(parents=True)
    cfg.save(out / "checkpoint" / "config.json")
    (out / "summary.json").write_text(json.dumps({"steps": 2, "wall_s": 1.0, "tokens_per_s": 1.0}))
    calls = []

    def fake_call(cmd, log, what, env=None):
        calls.append((what, cmd))
        if finish:
            (out / "summary.json").write_text(json.dumps({"steps": 4, "wall_s": 1.0, "tokens_per_s": 1.0}))

    monkeypatch.setattr(Grid, "_call", staticmethod(fake_call))
    monkeypatch.setattr(Grid, "evaluate", lambda self, *a, **k: ({"olh_lsm/lsm": 1.0}, {}))
    finish = False
    with pytest.raises(Exception, match=r"training stopped at step 2 of 4 .*log: .*cell\.log"):
        grid.run(progress=False)
    assert calls[-1][0] == "training" and calls[-1][1][-1] == "--resume"
    finish = True
    rows = grid.run(progress=False)
    assert [w for w, _ in calls] == ["training", "training"] and len(rows) == 1 and rows[0].train["steps"] == 4


def test_readme_family_and_correlation_tables_are_the_committed_results():
    """Every table scripts/family_tables.py prints from docs/families and docs/zoo is in the README."""
    from scripts.family_tables import main

    readme = (REPO / "README.md").read_text()
    out = main(REPO / "docs/families/results.jsonl", REPO / "docs/zoo/results.jsonl")
    tables = [b.strip() for b in out.split("\n\n") if b.strip().startswith("|")]
    assert len(tables) == 8  # five families; the zoo, its trained decoders, zoo + families
    for t in tables:
        assert t in readme, t.splitlines()[2]
