"""Synthetic grids through the ablation runner (issue 8): `kind: synthetic` specs, resume, errors."""
import csv
import json

import pytest
import torch
import yaml

import trainer.synthetic.grid as sg
from trainer.ablate import load_spec, main, validate_spec
from trainer.errors import OLHError

torch.set_num_threads(1)

TINY_BASE = dict(task="length", max_steps=15, batch_size=16, warmup_steps=3, eval_samples=8, test_max_len=20,
                 train_max_len=6, d_model=16, n_layer=1, n_head=2, mlp_ratio=2)


def write_spec(tmp_path, **over) -> str:
    spec = {"kind": "synthetic", "name": "tiny", "base": dict(TINY_BASE), "seeds": [0],
            "axes": {"reparam": ["identity", "sqrt"]}, **over}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(p)


def ledger(grid_dir) -> list[dict]:
    return [json.loads(x) for x in (grid_dir / "cells.jsonl").read_text().splitlines()]


def test_tiny_grid_end_to_end_and_resume(tmp_path, capsys, monkeypatch):
    spec, root = write_spec(tmp_path), tmp_path / "runs"
    assert main([spec, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "grid tiny: 2 runs, 0 already done, 2 to run" in out
    d = root / "tiny"
    recs = ledger(d)
    assert [r["overrides"]["reparam"] for r in recs] == ["identity", "sqrt"] and len({r["cell_id"] for r in recs}) == 2
    with open(d / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 20 and list(rows[0])[:7] == ["task", "arch", "pe", "reparam", "seed", "length", "mse"]
    assert {r["cell_id"] for r in rows} == {r["cell_id"] for r in recs}
    assert (d / "length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (d / "REPORT.md").read_text()
    # lengths outside the test range (50 > test_max_len) are dropped from the table
    assert "| MSE l=10 | MSE l=20 |" in report and "l=50" not in report
    assert "| length | decoder | nope | identity | 1 |" in report and "| length | decoder | nope | sqrt | 1 |" in report
    assert "## Difference to `identity`" in report and "×)" in report and "![length](length.png)" in report

    # rerun: every run is skipped (training would fail loudly), the report is rebuilt
    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(sg, "_run_cell", no_training)
    (d / "REPORT.md").unlink()
    assert main([spec, "--root", str(root)]) == 0
    assert "2 runs, 2 already done, 0 to run" in capsys.readouterr().out
    assert len(ledger(d)) == 2 and (d / "REPORT.md").exists()

    # --dry_run marks finished runs; --report_only rebuilds the report without running
    assert main([spec, "--root", str(root), "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(ln.endswith("(done)") for ln in lines)
    (d / "REPORT.md").unlink()
    assert main([spec, "--root", str(root), "--report_only"]) == 0
    assert (d / "REPORT.md").read_text().count("| length | decoder | nope |") == 3  # 2 error rows + 1 difference
    monkeypatch.undo()

    # a new seed only trains the new runs; a line cut short by a crash is dropped and rerun
    with open(d / "cells.jsonl", "a") as f:
        f.write('{"cell_id": "abc", "rows": [')
    spec2 = write_spec(tmp_path, seeds=[0, 1])
    assert main([spec2, "--root", str(root)]) == 0
    assert "4 runs, 2 already done, 2 to run" in capsys.readouterr().out
    recs2 = ledger(d)
    assert len(recs2) == 4 and recs2[:2] == recs
    assert "| length | decoder | nope | sqrt | 2 |" in (d / "REPORT.md").read_text()


def test_run_ids_and_jobs(tmp_path):
    spec = load_spec(write_spec(tmp_path, axes={"arch": ["decoder", "rnn"], "pe": ["nope", "rope"]}))
    cells = sg.grid_cells(spec)
    # rnn ignores the PE: its two combinations are one run
    assert [(c.job.arch, c.job.pe) for c in cells] == [("decoder", "nope"), ("decoder", "rope"), ("rnn", "-")]
    # the id ignores runner settings but not the settings of the run
    base = sg.validate_synthetic_spec(spec)
    a = sg.grid_cells(base, threads=1)[0].cid
    assert sg.grid_cells(base, threads=2)[0].cid == a
    assert sg.grid_cells({**base, "base": {**base["base"], "device": "cpu", "report_lengths": "5"}})[0].cid == a
    assert sg.grid_cells({**base, "base": {**base["base"], "lr": 0.01}})[0].cid != a
    assert sg.grid_cells({**base, "seeds": [1]})[0].cid != a
    # two worker processes give the same rows as one
    small = {**base, "base": {**base["base"], "max_steps": 3, "test_max_len": 4},
             "axes": {"reparam": ["identity", "log"]}}
    serial = sg.run_synthetic_grid(small, tmp_path / "a", jobs=1, report=False, log=lambda *_: None)
    parallel = sg.run_synthetic_grid(small, tmp_path / "b", jobs=2, report=False, log=lambda *_: None)
    assert (serial / "results.jsonl").read_text() == (parallel / "results.jsonl").read_text()


@pytest.mark.parametrize("over,message", [
    ({"evals": {}}, "unknown key(s) evals for a synthetic grid; valid: kind, name"),
    ({"base": {"max_step": 10}}, "base: unknown field 'max_step' (see python -m trainer.synthetic --help)"),
    ({"axes": {"reparm": ["sqrt"]}}, "axes: unknown field 'reparm'"),
    ({"axes": {"reparam": []}}, "axis 'reparam' is empty; give it a non-empty list of values"),
    ({"axes": {"reparam": ["identity", "exp"]}}, "axes: unknown reparam 'exp'; valid: identity, sqrt, log"),
    ({"axes": {"reparam": ["sqrt,log"]}}, "axes: 'reparam' takes one name per value, got 'sqrt,log'"),
    ({"base": {"max_steps": "many"}}, "base: 'max_steps' expects int, got 'many'"),
    ({"base": {**TINY_BASE, "seeds": 3}}, "base: 'seeds' is set by the runner, not per cell"),
    ({"axes": {"report_lengths": ["10"]}}, "axes: 'report_lengths' is a report setting; give it in 'base'"),
    ({"seeds": []}, "'seeds' must be a non-empty list of non-negative integers"),
    ({"axes": {}}, "give 'axes' or 'cells' (nothing to run)"),
    ({"base": {**TINY_BASE, "task": "mean"}, "axes": {"reparam": ["log"]}},
     'cell {"reparam": "log"}: reparam log: forward needs x > 0, got 0'),
    ({"cells": [{"n_head": 3}]}, 'cell {"n_head": 3}: d_model=16 is not divisible by n_head=3'),
    ({"kind": "synth"}, "unknown grid kind 'synth'; valid: lm (the default), synthetic"),
])
def test_malformed_spec_is_one_clear_line(tmp_path, capsys, over, message):
    spec = write_spec(tmp_path, **over)
    assert main([spec, "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {spec}: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_lm_specs_unchanged(tmp_path):
    # an LM spec may say kind: lm (or nothing); validate_spec itself still rejects an unknown 'kind' key
    p = tmp_path / "lm.yaml"
    p.write_text("kind: lm\nname: x\nbase: {preset: demo}\naxes: {alpha: [0.0]}\n")
    assert load_spec(p)["name"] == "x" and "kind" not in load_spec(p)
    with pytest.raises(OLHError, match="unknown key"):
        validate_spec({"kind": "synthetic", "name": "x", "axes": {"alpha": [0.0]}})


def test_shipped_grid_is_valid():
    spec = load_spec("grids/synthetic.yaml")
    cells = sg.grid_cells(spec)
    assert spec["axes"]["reparam"] == ["identity", "sqrt", "log", "inv_sqrt", "square", "cube"]
    assert len(cells) == 6 * 2 * len(spec["seeds"]) and {c.job.task for c in cells} == {"length"}
