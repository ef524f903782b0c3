"""--arch hf under DeepSpeed ZeRO-3 in a real two-process run (CPU accelerator): the model is loaded
partitioned, trained with alignment, saved (gathered) as a Hugging Face directory, and resumed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.helpers import metrics
from tests.hf_fixtures import hf_config, make_hf_model

pytestmark = pytest.mark.skipif(shutil.which("deepspeed", path=str(Path(sys.executable).parent)) is None,
                                reason="deepspeed launcher not installed")


def launch(src, out, *extra):
    from tests.test_deepspeed import free_port
    exe = str(Path(sys.executable).parent / "deepspeed")
    # constant learning rate: a run stopped at step 2 and resumed to 4 sees the same schedule as one run to 4
    cmd = [exe, "--num_gpus", "2", "--master_port", str(free_port()), "--module", "trainer.train",
           "--deepspeed", "ds_configs/zero3.json", "--preset", "tiny", "--arch", "hf", "--init_from", str(src),
           "--seq_len", "32", "--alpha", "0.1", "--warmup_steps", "0", "--min_lr_ratio", "1", "--out", str(out), *extra]
    p = subprocess.run(cmd, cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_zero3_partitioned_load_resume_and_saved_directory(tmp_path):
    src = make_hf_model("llama", tmp_path / "llama")
    full, part = tmp_path / "full", tmp_path / "part"
    print(*[ln for ln in launch(src, full, "--max_steps", "4").stdout.splitlines() if ln.startswith('{"steps"')])
    launch(src, part, "--max_steps", "2")
    launch(src, part, "--max_steps", "4", "--resume")
    a, b = metrics(full), metrics(part)
    print("uninterrupted:", [r["loss"] for r in a], "\nstopped at 2 + --resume:", [r["loss"] for r in b])
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-6)
    assert all("mis" in r for r in a)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4

    # the saved HF directory scores exactly like the trained weights held in memory
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    import olharness  # noqa: F401  (registers hf-lsm)
    from trainer.checkpoint import load_state_into
    from trainer.start import load_pretrained
    ck = full / "checkpoint"
    model, tok = load_pretrained(hf_config(src, tmp_path), tmp_path)
    load_state_into(model, load_file(str(ck / "model.safetensors")), ck)
    before, _ = load_pretrained(hf_config(src, tmp_path), tmp_path)
    assert any(not torch.equal(x, y) for x, y in zip(model.parameters(), before.parameters()))  # it trained
    in_memory = get_model("hf-lsm")(pretrained=model.hf.eval(), tokenizer=tok.tok, device="cpu", batch_size=2)
    saved = get_model("hf-lsm")(pretrained=str(ck / "hf"), device="cpu", batch_size=2, dtype="float32")
    text = "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, " * 4
    reqs = [Instance("lsm", {}, (text, 16, 32), 0), Instance("lsm", {}, (text, 24, 48), 1)]
    got, want = saved.lsm(reqs), in_memory.lsm(reqs)
    for g, w in zip(got, want):
        assert g["lsm"] == pytest.approx(w["lsm"], rel=1e-6) and g["lsm_symkl"] == pytest.approx(w["lsm_symkl"], rel=1e-5)
