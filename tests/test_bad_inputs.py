"""Every bad input a user can give the trainer is one `error:` line and exit status 2, and leaves
nothing behind that a correct rerun would trip on.

Each row: (id, setup, argv, message). `setup(tmp_path, src)` prepares files (src is a finished tiny
run) and returns a dict of names for the argv template; the test snapshots --out before the call and
checks that the failed call changed nothing in it (a fresh --out may be created, empty but for the
lock file)."""
import json
import random
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import train_tiny
from trainer.lifecycle import RunLock
from trainer.train import main


def _copy(tmp_path, src):
    run = tmp_path / "run"
    shutil.copytree(src, run)
    return run


def fresh(tmp_path, src):
    return {"out": str(tmp_path / "out")}


def resumable(edit=None):
    """A copy of the finished tiny run to --resume (with --max_steps 40, so it has steps left)."""
    def setup(tmp_path, src):
        run = _copy(tmp_path, src)
        if edit is not None:
            edit(run / "checkpoint")
        return {"out": str(run)}
    return setup


def init_source(edit):
    """A copy of the tiny run's checkpoint, broken by `edit`, to --init_from."""
    def setup(tmp_path, src):
        run = _copy(tmp_path, src)
        edit(run / "checkpoint")
        return {"out": str(tmp_path / "out"), "src": str(run)}
    return setup


def _json_edit(name, fn):
    def edit(ck):
        p = ck / name
        p.write_text(json.dumps(fn(json.loads(p.read_text()))))
    return edit


def _write(name, data: bytes):
    return lambda ck: (ck / name).write_bytes(data)


def _truncate(name):
    return lambda ck: (ck / name).write_bytes((ck / name).read_bytes()[:1000])


def _rng_keys(ck):
    from safetensors.torch import load_file, save_file
    rng = load_file(str(ck / "rng.safetensors"))
    save_file({k.replace("torch_", "cpu_"): v for k, v in rng.items()}, str(ck / "rng.safetensors"))


def _opt_structure(ck):
    torch.save({"optimizer": [1, 2, 3]}, ck / "optimizer.pt")


def _ds_run(ck):
    _json_edit("config.json", lambda c: {**c, "train": {**c["train"], "deepspeed": "ds_configs/zero2.json"}})(ck)
    _json_edit("trainer_state.json", lambda s: {**s, "world_size": 2, "deepspeed": True})(ck)


def _file(tmp_path, src):
    (tmp_path / "afile").write_text("not a directory")
    return {"out": str(tmp_path / "afile")}


def _locked(tmp_path, src):
    (tmp_path / "out").mkdir()
    lock = RunLock(tmp_path / "out", "a trainer").acquire()  # another trainer holds --out; released by the test
    return {"out": str(tmp_path / "out"), "lock": lock}


def _bad_json(tmp_path, src, text):
    (tmp_path / "c.json").write_text(text)
    return {"out": str(tmp_path / "out"), "cfg": str(tmp_path / "c.json")}


RESUME = ["--resume", "--out", "{out}", "--max_steps", "40"]
FRESH = ["--preset", "tiny", "--out", "{out}"]

ROWS = [
    # numbers out of range (silently wrong or tracebacks before)
    ("alpha-negative", fresh, FRESH + ["--alpha", "-1"], r"--alpha -1.0: must be a finite number in \[0, inf\)"),
    ("alpha-nan", fresh, FRESH + ["--alpha", "nan"], r"--alpha nan: must be a finite number"),
    ("alpha-inf", fresh, FRESH + ["--alpha", "inf"], r"--alpha inf: must be a finite number"),
    ("d_model-0", fresh, FRESH + ["--d_model", "0"], r"--d_model 0: must be a finite number in \[1, inf\)"),
    ("seq_len-0", fresh, FRESH + ["--seq_len", "0"], r"--seq_len 0: must be"),
    ("max_steps-negative", fresh, FRESH + ["--max_steps", "-5"], r"--max_steps -5: must be"),
    ("log_every-0", fresh, FRESH + ["--log_every", "0"], r"--log_every 0: must be"),
    ("threads-negative", fresh, FRESH + ["--threads", "-1"], r"--threads -1: must be"),
    ("n_head-not-dividing", fresh, FRESH + ["--n_head", "3"], r"--n_head 3: must divide d_model=32"),
    ("device-tpu", fresh, FRESH + ["--device", "tpu"], r"--device 'tpu': valid: auto, cpu, cuda, cuda:N"),
    ("batch_size-0", fresh, FRESH + ["--batch_size", "0"], r"--batch_size 0: must be"),
    ("lr-negative", fresh, FRESH + ["--lr", "-0.001"], r"--lr -0.001: must be"),
    ("lr-nan", fresh, FRESH + ["--lr", "nan"], r"--lr nan: must be"),
    ("dropout-above-1", fresh, FRESH + ["--dropout", "1.5"], r"--dropout 1.5: must be"),
    ("extra_frac-0", fresh, FRESH + ["--extra_frac", "0"], r"--extra_frac 0.0: must be a finite number in \(0, 1\]"),
    ("min_lr_ratio-2", fresh, FRESH + ["--min_lr_ratio", "2"], r"--min_lr_ratio 2.0: must be"),
    ("save_every-negative", fresh, FRESH + ["--save_every", "-1"], r"--save_every -1: must be"),
    ("warmup-negative", fresh, FRESH + ["--warmup_steps", "-1"], r"--warmup_steps -1: must be"),
    ("grad_clip-negative", fresh, FRESH + ["--grad_clip", "-1"], r"--grad_clip -1.0: must be"),
    ("vocab_size-0", fresh, FRESH + ["--vocab_size", "0"], r"--vocab_size 0: must be"),
    ("n_layer-0", fresh, FRESH + ["--n_layer", "0"], r"--n_layer 0: must be"),
    ("tgt_len-0", fresh, FRESH + ["--tgt_len", "0"], r"--tgt_len 0: must be"),
    ("seed-negative", fresh, FRESH + ["--seed", "-1"], r"--seed -1: must be"),
    ("rope_scale-0", fresh, FRESH + ["--rope_scale", "0"], r"--rope_scale 0.0: must be"),
    ("rope_base-0", fresh, FRESH + ["--rope_base", "0"], r"--rope_base 0.0: must be"),
    ("max_positions-0", fresh, FRESH + ["--max_positions", "0"], r"--max_positions 0: must be"),
    ("l_test-negative", fresh, FRESH + ["--l_test", "-1"], r"--l_test -1: must be"),
    # names
    ("cell-unknown-non-rnn", fresh, FRESH + ["--cell", "rwkv"], r"unknown rnn cell 'rwkv'; valid: lstm, gru"),
    ("arch-unknown", fresh, FRESH + ["--arch", "mamba"], r"unknown model architecture 'mamba'"),
    ("pe-unknown", fresh, FRESH + ["--pe", "xpos"], r"unknown positional encoding 'xpos'"),
    ("divergence-unknown", fresh, FRESH + ["--divergence", "emd"], r"unknown divergence 'emd'"),
    ("scope-unknown", fresh, FRESH + ["--scope", "middle"], r"unknown scope 'middle'"),
    ("target-unknown", fresh, FRESH + ["--target", "attention"], r"unknown .*'attention'"),
    ("schedule-unknown", fresh, FRESH + ["--alpha_schedule", "exp"], r"unknown .*'exp'"),
    ("rope_scaling-unknown", fresh, FRESH + ["--rope_scaling", "yarn"], r"unknown .*'yarn'"),
    ("dtype-unknown", fresh, FRESH + ["--dtype", "float16"], r"--dtype 'float16': valid: auto, float32, bfloat16"),
    ("tokenizer_type-unknown", fresh, FRESH + ["--tokenizer_type", "word"], r"--tokenizer_type 'word': valid: bpe"),
    ("kl_direction-unknown", fresh, FRESH + ["--kl_direction", "up"], r"--kl_direction 'up': valid"),
    ("max_steps-not-int", fresh, FRESH + ["--max_steps", "ten"], r"--max_steps expects int, got 'ten'"),
    ("bool-not-bool", fresh, FRESH + ["--detach_long", "maybe"], r"--detach_long expects true/false, got 'maybe'"),
    ("preset-unknown", fresh, ["--preset", "huge", "--out", "{out}"], r"unknown preset 'huge'"),
    ("milestones-malformed", fresh, FRESH + ["--alpha_schedule", "step", "--alpha_milestones", "x"],
     r"alpha_milestones 'x'"),
    # where it runs
    ("out-under-proc", fresh, ["--preset", "tiny", "--out", "/proc/olh-run"], r"--out /proc/olh-run is under /proc"),
    ("out-under-sys", fresh, ["--preset", "tiny", "--out", "/sys/olh-run"], r"--out /sys/olh-run is under /sys"),
    ("out-is-a-file", _file, FRESH, r"--out .*afile is an existing file"),
    ("out-locked", _locked, FRESH, r"is in use by pid \d+ \(a trainer\)"),
    ("deepspeed-without-launcher", fresh, FRESH + ["--deepspeed", "ds_configs/zero2.json"],
     r"--deepspeed needs the deepspeed launcher: deepspeed --num_gpus N --module trainer.train"),
    ("config-missing", fresh, ["--config", "/nonexistent/c.json", "--out", "{out}"], r"cannot read config"),
    ("config-a-list", lambda t, s: _bad_json(t, s, "[1, 2]"), ["--config", "{cfg}", "--out", "{out}"],
     r"a config must be a JSON object"),
    ("config-wrong-type", lambda t, s: _bad_json(t, s, '{"model": {"d_model": "wide"}}'),
     ["--config", "{cfg}", "--out", "{out}"], r"--d_model 'wide': must be int"),
    ("data-missing", fresh, FRESH + ["--data", "/nonexistent/corpus"], r"/nonexistent/corpus"),
    ("tokenizer-missing", fresh, FRESH + ["--tokenizer", "/nonexistent/tok.model"], r"/nonexistent/tok.model"),
    # --init_from a broken checkpoint
    ("init_from-missing", fresh, FRESH + ["--init_from", "/nonexistent/run"], r"no checkpoint: .* does not exist"),
    ("init_from-truncated-weights", init_source(_truncate("model.safetensors")), FRESH + ["--init_from", "{src}"],
     r"corrupt checkpoint file .*model.safetensors"),
    ("init_from-config-wrong-types", init_source(_json_edit("config.json", lambda c: {**c, "model": {
        **c["model"], "n_layer": "two"}})), FRESH + ["--init_from", "{src}"], r"--n_layer 'two': must be int"),
    ("init_from-config-null-model", init_source(_json_edit("config.json", lambda c: {**c, "model": None})),
     FRESH + ["--init_from", "{src}"], r"config section 'model' must be an object"),
    ("init_from-config-a-list", init_source(_json_edit("config.json", lambda c: [c])),
     FRESH + ["--init_from", "{src}"], r"a config must be a JSON object"),
    # --resume of a broken or mismatched checkpoint
    ("resume-trainer_state-not-json", resumable(_write("trainer_state.json", b"{\"step\": 2")), RESUME,
     r"corrupt or missing .*trainer_state.json"),
    ("resume-trainer_state-wrong-types", resumable(_json_edit("trainer_state.json", lambda s: {**s, "step": "20"})),
     RESUME, r"trainer_state.json is malformed"),
    ("resume-trainer_state-a-list", resumable(_write("trainer_state.json", b"[20]")), RESUME,
     r"trainer_state.json is malformed"),
    ("resume-rng-wrong-keys", resumable(_rng_keys), RESUME, r"rng tensors .* are missing"),
    ("resume-rng-corrupt", resumable(_truncate("rng.safetensors")), RESUME, r"corrupt checkpoint file .*rng"),
    ("resume-optimizer-missing", resumable(lambda ck: (ck / "optimizer.pt").unlink()), RESUME,
     r"optimizer.pt is missing"),
    ("resume-optimizer-garbage", resumable(_write("optimizer.pt", b"\x00garbage" * 50)), RESUME,
     r"corrupt checkpoint file .*optimizer.pt"),
    ("resume-optimizer-wrong-structure", resumable(_opt_structure), RESUME, r"optimizer.pt is malformed"),
    ("resume-finished-run", resumable(), ["--resume", "--out", "{out}"], r"already finished \(20 steps\)"),
    ("resume-smaller-max_steps", resumable(), ["--resume", "--out", "{out}", "--max_steps", "10"],
     r"is at step 20, past --max_steps 10"),
    ("resume-changes-the-model", resumable(), RESUME + ["--d_model", "64"],
     r"--resume cannot change d_model \(32 in the checkpoint, 64 given\)"),
    ("resume-plain-run-under-deepspeed-world", resumable(_json_edit("trainer_state.json",
                                                                    lambda s: {**s, "world_size": 2})),
     RESUME, r"written by 2 process\(es\), this run has 1; resume it with: deepspeed --num_gpus 2"),
    ("rerun-without-resume", resumable(), FRESH, r"already holds a checkpoint; pass --resume"),
    ("resume-deepspeed-run-without-launcher", resumable(_ds_run), RESUME,
     r"was trained with DeepSpeed; resume it with: deepspeed --num_gpus 2 --module trainer.train --resume --out"),
    ("resume-nothing-there", fresh, ["--resume", "--out", "{out}"], r"nothing to resume in .*: no checkpoint"),
]


def _snapshot(out: Path) -> dict:
    if not out.is_dir():
        return {}
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*")
            if p.name != ".lock"}


@pytest.mark.parametrize("name,setup,argv,msg", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_line(tmp_path, tiny_run, capsys, monkeypatch, name, setup, argv, msg):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    names = setup(tmp_path, tiny_run("decoder"))
    argv = [a.format(**names) for a in argv]
    before = _snapshot(Path(names["out"]))
    try:
        rc = main(argv)
    finally:
        if "lock" in names:
            names["lock"].release()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    errors = [ln for ln in err if "error:" in ln]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("error: "), err
    assert not any("Traceback" in ln for ln in err), err
    assert re.search(msg, errors[0]), errors[0]
    assert _snapshot(Path(names["out"])) == before  # nothing written (or rewritten)


def test_table_size():
    assert len(ROWS) >= 40 and len({r[0] for r in ROWS}) == len(ROWS)


def test_a_failed_run_leaves_nothing_a_rerun_trips_on(tmp_path):
    """A run that fails after its tokenizer was trained (corpus too short for a window), rerun into the
    same --out with another vocabulary: the rerun trains its own tokenizer, never the stale one."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(600)]
    (corpus / "a.txt").write_text(" ".join(rng.choice(words) for _ in range(1500)))
    (corpus / "b.txt").write_text(" ".join(rng.choice(words) for _ in range(500)))
    out = tmp_path / "r"
    with pytest.raises(Exception, match="fewer than one window"):
        train_tiny(out, data=str(corpus), vocab_size=400, seq_len=8000, max_positions=8192, alpha=0)
    assert (out / "tokenizer.model").exists()
    train_tiny(out, data=str(corpus), vocab_size=300, alpha=0, max_steps=2)
    from trainer.data import Tokenizer
    assert Tokenizer.load(out / "checkpoint/tokenizer.model").vocab_size <= 300
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
