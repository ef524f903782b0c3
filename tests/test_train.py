"""Trainer spine: golden losses, exact resume, checkpoints, CLI, clear errors on bad input."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import metrics, train_tiny
from trainer.checkpoint import load_model
from trainer.config import RunConfig, preset
from trainer.errors import CheckpointError, DataError, OLHError
from trainer.train import main

@pytest.mark.parametrize("arch", ["decoder", "encdec", "rnn"])
def test_resume_matches_uninterrupted_run(tmp_path, arch):
    a = train_tiny(tmp_path / "a", arch=arch)
    b = train_tiny(tmp_path / "b", arch=arch, stop_at=7)
    assert len(metrics(b)) == 7
    train_tiny(tmp_path / "b", arch=arch, resume=True)
    wa, wb = load_file(a / "checkpoint/model.safetensors"), load_file(b / "checkpoint/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["loss"] for r in metrics(a)] == [r["loss"] for r in metrics(b)]


def test_checkpoint_contents_and_reload(tiny_run):
    run = tiny_run("decoder")
    ck = run / "checkpoint"
    for f in ("config.json", "tokenizer.model", "model.safetensors", "trainer_state.json", "rng.safetensors",
              "optimizer.pt"):
        assert (ck / f).exists(), f
    cfg = RunConfig.load(ck / "config.json")
    assert cfg.model.arch == "decoder" and cfg.data.seq_len == 32
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["step"] == 20 and "torch" in state["versions"]
    model, cfg2, tok = load_model(run)
    assert cfg2 == cfg and not model.training
    assert (run / "summary.json").exists() and len(metrics(run)) == 20
    assert not list(run.glob("checkpoint.*"))  # no temp dirs left behind


def test_refuses_to_overwrite_a_checkpoint(tiny_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(tiny_run("decoder"), run)
    with pytest.raises(OLHError, match="already holds a checkpoint; pass --resume"):
        train_tiny(run)


def test_resume_with_a_different_config_is_refused(tiny_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(tiny_run("decoder"), run)
    with pytest.raises(OLHError, match=r"--resume cannot change d_model \(32 in the checkpoint, 64 given\)"):
        train_tiny(run, resume=True, d_model=64)


def test_corrupt_and_missing_checkpoints(tiny_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(tiny_run("decoder"), run)
    (run / "checkpoint/model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt checkpoint file .*model.safetensors"):
        load_model(run)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_model(tmp_path / "empty")
    (run / "checkpoint/tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="incomplete: missing tokenizer.model"):
        load_model(run)


def test_weights_that_do_not_fit_the_config(tiny_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(tiny_run("decoder"), run)
    cfg = RunConfig.load(run / "checkpoint/config.json")
    cfg.model.n_layer = 3
    cfg.save(run / "checkpoint/config.json")
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_model(run)


def test_corpus_shorter_than_one_window(tmp_path, tiny_run):
    (tmp_path / "c").mkdir()
    (tmp_path / "c/a.txt").write_text("a tiny corpus. " * 40)
    (tmp_path / "c/b.txt").write_text("held out. " * 40)
    with pytest.raises(DataError, match="fewer than one window"):
        train_tiny(tmp_path / "r", data=str(tmp_path / "c"), seq_len=1000, max_positions=1024, alpha=0,
                   tokenizer=str(tiny_run("decoder") / "tokenizer.model"))


def test_seq_len_beyond_learned_positions(tmp_path):
    with pytest.raises(OLHError, match="seq_len=64 is larger than the model's max_positions=32"):
        train_tiny(tmp_path / "r", pe="learned", seq_len=64, max_positions=32)


@pytest.mark.parametrize("argv,msg", [
    (["--arch", "mamba"], "unknown model architecture 'mamba'; valid: decoder, encdec, hf, rnn"),
    (["--pe", "xpos"], "unknown positional encoding 'xpos'; valid: nope, learned, sinusoidal, rope, alibi"),
    (["--preset", "huge"], "unknown preset 'huge'; valid: tiny, demo, small, gpt2, synthetic"),
    (["--arch", "rnn", "--cell", "elman"], "unknown rnn cell 'elman'; valid: lstm, gru"),
    (["--divergence", "wasserstein"], "unknown divergence 'wasserstein'; valid: sce, kl, sym_kl, js, l2"),
    (["--scope", "middle"], "unknown scope 'middle'; valid: all, last, first, first_frac:ARG"),
    (["--max_steps", "ten"], "--max_steps expects int, got 'ten'"),
])
def test_cli_bad_names_one_clear_line(tmp_path, capsys, argv, msg):
    rc = main(["--preset", "tiny", "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == f"error: {msg}"


def test_help_lists_every_axis():
    out = subprocess.run([sys.executable, "-m", "trainer.train", "--help"], capture_output=True, text=True).stdout
    for word in ("--arch", "decoder", "encdec", "rnn", "--pe", "alibi", "--divergence", "sce", "js",
                 "--scope", "first_frac:ARG", "--target", "hidden+logits", "--alpha_schedule", "cosine",
                 "--deepspeed", "--resume", "--seq_len", "--data", "--rope_scaling", "ntk"):
        assert word in out, word


def test_config_json_roundtrip_and_unknown_fields(tmp_path):
    cfg = preset("demo")
    cfg.set("alpha", "0.3")
    cfg.set("detach_long", "true")
    cfg.save(tmp_path / "c.json")
    assert RunConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(OLHError, match="unknown config field 'alpah'"):
        cfg.set("alpah", 1)
    bad = cfg.to_dict()
    bad["align"]["gamma"] = 1
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(OLHError, match="unknown field.*gamma"):
        RunConfig.load(tmp_path / "b.json")


def test_init_from_copies_weights_bit_exactly_with_new_seq_len_and_scaling(tiny_run, tmp_path):
    src = tiny_run("decoder")
    out = train_tiny(tmp_path / "ext", init_from=str(src), seq_len=64, rope_scaling="pi", rope_scale=2.0,
                     max_steps=1, lr=0.0, warmup_steps=1)
    cfg = RunConfig.load(out / "checkpoint/config.json")
    assert cfg.data.seq_len == 64 and cfg.model.rope_scaling == "pi" and cfg.model.rope_scale == 2.0
    assert (out / "tokenizer.model").read_bytes() == (src / "checkpoint/tokenizer.model").read_bytes()
    a, b = load_file(src / "checkpoint/model.safetensors"), load_file(out / "checkpoint/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr = 0: one step leaves the copied weights untouched
    model, _, _ = load_model(out)  # the scaling round-trips through the checkpoint's config
    assert model.pe.pos_scale == 2.0
    src_model, _, _ = load_model(src)
    torch.testing.assert_close(model.pe.inv_freq, src_model.pe.inv_freq)


def test_init_from_mismatches_are_clear_errors(tiny_run, tmp_path, capsys):
    src = tiny_run("decoder")
    assert main(["--preset", "tiny", "--init_from", str(src), "--d_model", "64", "--out", str(tmp_path / "x")]) == 2
    assert "has d_model=32, but --d_model 64 was given" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="does not exist"):
        train_tiny(tmp_path / "y", init_from=str(tmp_path / "missing"))
    with pytest.raises(OLHError, match="rope_scaling=ntk needs a rope model"):
        train_tiny(tmp_path / "z", init_from=str(tiny_run("rnn", "nope")), rope_scaling="ntk", rope_scale=2.0)


def test_resume_of_an_init_from_run_in_a_moved_directory_takes_its_own_config(tiny_run, tmp_path, capsys):
    """`--resume --out DIR` alone (the command a stopped run prints) continues a run started with
    --init_from and flags that differ from the preset, after its directory was moved; the result is
    the uninterrupted run's, bit for bit."""
    src = tiny_run("decoder")
    flags = dict(init_from=str(src), seq_len=48, rope_scaling="pi", rope_scale=1.5, max_steps=6, alpha=0.2)
    a = train_tiny(tmp_path / "a", **flags)
    train_tiny(tmp_path / "b", stop_at=3, **flags)
    moved = tmp_path / "moved"
    (tmp_path / "b").rename(moved)
    assert main(["--resume", "--out", str(moved)]) == 0
    assert [r["loss"] for r in metrics(moved)] == [r["loss"] for r in metrics(a)]
    wa, wb = load_file(a / "checkpoint/model.safetensors"), load_file(moved / "checkpoint/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert RunConfig.load(moved / "checkpoint/config.json").train.out == str(moved)
    capsys.readouterr()
    assert main(["--resume", "--out", str(moved), "--max_steps", "8", "--log_every", "2"]) == 0  # resume-safe
    assert [r["step"] for r in metrics(moved)] == list(range(1, 9))
