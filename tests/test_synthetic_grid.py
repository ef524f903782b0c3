"""Synthetic grids through the ablation runner like any cell: results.jsonl, report, resume, errors."""
import json

import pytest
import torch
import yaml

from trainer.ablate import Grid, main
from trainer.results import read_rows
from trainer.spec import load_spec

torch.set_num_threads(1)

TINY_BASE = dict(preset="synthetic", task="length", max_steps=15, batch_size=16, warmup_steps=3, eval_samples=8,
                 test_len=20, seq_len=6, d_model=16, n_layer=1, n_head=2, mlp_ratio=2)


def write_spec(tmp_path, **over) -> str:
    spec = {"name": "tiny", "base": dict(TINY_BASE), "seeds": [0], "axes": {"reparam": ["identity", "sqrt"]}, **over}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(p)


def test_tiny_grid_end_to_end_and_resume(tmp_path, capsys, monkeypatch):
    spec, root = write_spec(tmp_path), tmp_path / "runs"
    assert main([spec, "--root", str(root), "--threads", "1"]) == 0
    assert "grid tiny: 2 runs, 0 already done, 2 to run" in capsys.readouterr().out
    d = root / "tiny"
    rows = list(read_rows(d / "results.jsonl").values())
    assert [r.overrides["reparam"] for r in sorted(rows, key=lambda r: r.overrides["reparam"])] == ["identity", "sqrt"]
    for r in rows:
        assert r.train["steps"] == 15 and r.final_lm_loss is None and r.config["data"]["task"] == "length"
        assert sorted(k for k in r.eval if k.startswith("mse@")) == sorted(f"mse@{n}" for n in range(1, 21))
    assert (d / "length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (d / "REPORT.md").read_text()
    assert "| reparam | n | MSE train lengths | MSE l=6 | MSE l=12 | MSE l=20 | clamped l=20 |" in report
    assert "| identity (baseline) | 1 |" in report and "| sqrt | 1 |" in report and "(Δ " in report

    # rerun: every cell is skipped (training would fail loudly), the report is rebuilt
    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")
    monkeypatch.setattr(Grid, "_call", staticmethod(no_training))
    (d / "REPORT.md").unlink()
    assert main([spec, "--root", str(root)]) == 0
    assert "2 runs, 2 already done, 0 to run" in capsys.readouterr().out and (d / "REPORT.md").exists()
    assert main([spec, "--root", str(root), "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(ln.endswith("(done)") for ln in lines)
    monkeypatch.undo()

    # a new seed only trains the new cells; a line cut short by a crash is dropped and its cell rerun
    text = (d / "results.jsonl").read_text()
    (d / "results.jsonl").write_text(text + text.splitlines()[0][:50])
    assert main([write_spec(tmp_path, seeds=[0, 1]), "--root", str(root), "--threads", "1"]) == 0
    assert "4 runs, 2 already done, 2 to run" in capsys.readouterr().out
    assert len(read_rows(d / "results.jsonl")) == 4
    assert "| sqrt | 2 |" in (d / "REPORT.md").read_text()


def test_cell_ids_and_jobs(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    ids = [cid for *_, cid in Grid(spec, tmp_path).cells()]
    # the id ignores where and how a run executes, not what it computes
    spec.base.update(threads=3, device="cpu", log_every=7)
    assert [cid for *_, cid in Grid(spec, tmp_path).cells()] == ids
    spec.base["lr"] = 0.01
    assert not set(ids) & {cid for *_, cid in Grid(spec, tmp_path).cells()}
    # one job or two: the same numbers
    small = write_spec(tmp_path, base={**TINY_BASE, "max_steps": 3, "test_len": 4}, axes={"reparam": ["identity", "log"]})
    for jobs, root in ((1, "a"), (2, "b")):
        assert main([small, "--root", str(tmp_path / root), "--jobs", str(jobs), "--threads", "1", "--no_report"]) == 0
    evals = [{k: r.eval for k, r in read_rows(tmp_path / root / "tiny" / "results.jsonl").items()} for root in "ab"]
    assert evals[0] == evals[1] and len(evals[0]) == 2


@pytest.mark.parametrize("over,message", [
    ({"evals": {}}, "unknown key 'evals'; valid: name, description"),
    ({"base": {**TINY_BASE, "max_step": 10}}, "base: unknown config field 'max_step'"),
    ({"axes": {"reparm": ["sqrt"]}}, "axes: unknown config field 'reparm'"),
    ({"axes": {"reparam": []}}, "axes: axis 'reparam' is empty; give it a non-empty list of values"),
    ({"axes": {"reparam": ["identity", "exp"]}}, 'cell {"reparam": "exp"}: unknown reparam \'exp\'; valid: identity'),
    ({"base": {**TINY_BASE, "max_steps": "many"}}, "cell {\"reparam\": \"identity\"}: --max_steps expects int, got 'many'"),
    ({"seeds": []}, "seeds: List should have at least 1 item"),
    ({"axes": {}}, "give 'axes' or 'cells' (nothing to run)"),
    ({"base": {**TINY_BASE, "task": "mean"}, "axes": {"reparam": ["log"]}},
     'cell {"reparam": "log"}: reparam log: forward needs x > 0, got 0'),
])
def test_malformed_spec_is_one_clear_line(tmp_path, capsys, over, message):
    spec = write_spec(tmp_path, **over)
    assert main([spec, "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {spec}: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_shipped_synthetic_grids_are_valid(tmp_path):
    cells = Grid(load_spec("grids/synthetic.yaml"), tmp_path).cells()
    assert len(cells) == 6 * 2 * 3 and {cfg.data.task for _, cfg, _ in cells} == {"length"}
    paper = Grid(load_spec("grids/synthetic_paper.yaml"), tmp_path).cells()
    assert len(paper) == 126 and {cfg.model.head for _, cfg, _ in paper} == {"scalar"}
    assert sum(cfg.data.task == "mean" for _, cfg, _ in paper) == 6 * 3
