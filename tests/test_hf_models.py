"""--arch hf: pretrained Hugging Face causal LMs through the trainer's own loop and Objective.

Tiny random models of each listed architecture (tests/hf_fixtures.py) stand in for real checkpoints;
nothing is downloaded."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest_olh import build_checkpoint  # noqa: F401
from tests.helpers import metrics, train_tiny
from tests.hf_fixtures import SIZES, hf_config, make_hf_model
from trainer.alignment import Objective
from trainer.checkpoint import load_state_into
from trainer.start import load_pretrained
from trainer.train import main

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_models")
    return {a: make_hf_model(a, root / a) for a in SIZES}


def _batch(cfg, window, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 380, (cfg.train.batch_size, window), generator=g)


@pytest.mark.parametrize("arch", list(SIZES))
def test_alpha0_loss_is_the_models_own_loss_in_one_forward(hf_dirs, tmp_path, arch):
    cfg = hf_config(hf_dirs[arch], tmp_path, alpha=0.0)
    model, tok = load_pretrained(cfg, tmp_path)
    obj = Objective(cfg, model.kind, tok.bos_id)
    calls = []
    model.hf.register_forward_hook(lambda *a: calls.append(1))
    seq = _batch(cfg, obj.window)
    loss, _ = obj(model, seq, 0, torch.Generator().manual_seed(0))
    assert len(calls) == 1 and obj.window == cfg.data.seq_len
    x = seq[:, :cfg.data.seq_len]
    ref = model.hf(input_ids=x, labels=x).loss
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    # hidden states for target=hidden: one per layer, the last one the top layer's output
    out = model.hf(input_ids=x, output_hidden_states=True)
    logits, hidden = model(x, return_hidden=True)
    assert len(hidden) == model.hf.config.num_hidden_layers
    assert torch.equal(logits, out.logits)
    assert torch.allclose(hidden[0], torch.nn.functional.layer_norm(out.hidden_states[1], hidden[0].shape[-1:]))


def _window_grads(cfg, source, out, **align):
    """Gradients reaching each forward pass's input embeddings (long window first, then short)."""
    for k, v in align.items():
        cfg.set(k, v)
    torch.manual_seed(0)
    model, tok = load_pretrained(cfg, out)
    obj = Objective(cfg, model.kind, tok.bos_id)
    embs = []

    def keep(module, inp, output):
        output.retain_grad()
        embs.append(output)
    model.hf.get_input_embeddings().register_forward_hook(keep)
    loss, m = obj(model, _batch(cfg, obj.window), 0, torch.Generator().manual_seed(1))
    loss.backward()
    grads = torch.cat([e.grad for e in embs])  # both windows: one batched [2B, L] pass or two passes
    assert len(embs) in (1, 2) and grads.shape[0] % 2 == 0
    return list(grads.chunk(2))


@pytest.mark.parametrize("target", ["logits", "hidden"])
def test_alignment_moves_both_windows(hf_dirs, tmp_path, target):
    """With the same l_extra draw, alpha > 0 changes the gradient of both windows against the
    compute-matched alpha = 0 run; --detach_long leaves the long window's gradient as it was."""
    src = hf_dirs["llama"]
    base = _window_grads(hf_config(src, tmp_path), src, tmp_path, alpha=0.0, pair_windows=True, target=target)
    aligned = _window_grads(hf_config(src, tmp_path), src, tmp_path, alpha=0.1, target=target)
    detached = _window_grads(hf_config(src, tmp_path), src, tmp_path, alpha=0.1, target=target, detach_long=True)
    for b, a in zip(base, aligned):
        assert (a - b).abs().max() > 1e-6 * b.abs().max()
    assert torch.equal(detached[0], base[0])
    assert (detached[1] - base[1]).abs().max() > 1e-6 * base[1].abs().max()


ROUND_TRIPS = [("llama", r) for r in ("pi", "ntk", "yarn", "abf")] + [
    ("qwen2", "yarn"), ("mistral", "ntk"), ("gpt_neox", "pi"), ("gpt2", "none")]


@pytest.mark.parametrize("arch,rope", ROUND_TRIPS)
def test_train_save_and_reload_with_plain_from_pretrained(hf_dirs, tmp_path, arch, rope):
    """A few aligned steps; checkpoint/hf loads with AutoModelForCausalLM alone (RoPE extension in its
    config) and gives the trained module's logits, at a length past the original positions."""
    from transformers import AutoModelForCausalLM
    out = tmp_path / "run"
    train_tiny(out, arch="hf", init_from=str(hf_dirs[arch]), seq_len=32, rope_scaling=rope, rope_scale=2.0,
               max_steps=3, alpha=0.1)
    ck = out / "checkpoint"
    saved = json.loads((ck / "hf" / "config.json").read_text())
    if rope != "none":
        want = {"pi": "linear", "ntk": "dynamic", "yarn": "yarn", "abf": "default"}[rope]
        assert saved["rope_parameters"]["rope_type"] == want
        if rope == "abf":
            assert saved["rope_parameters"]["rope_theta"] == 4e4
    reloaded = AutoModelForCausalLM.from_pretrained(ck / "hf", dtype=torch.float32).eval()
    cfg = hf_config(hf_dirs[arch], tmp_path, rope_scaling=rope, rope_scale=2.0)
    trained, _ = load_pretrained(cfg, tmp_path)  # the source + the same extension, then the trained weights
    load_state_into(trained, load_file(str(ck / "model.safetensors")), ck)
    x = torch.randint(0, 380, (2, 48), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=x).logits, trained.eval()(x), atol=1e-5, rtol=0)
        untrained, _ = load_pretrained(cfg, tmp_path)
        assert not torch.allclose(untrained.eval()(x), trained(x), atol=1e-3)  # the steps did change it


def test_resume_continues_exactly(hf_dirs, tmp_path):
    src = str(hf_dirs["qwen2"])
    full = train_tiny(tmp_path / "full", arch="hf", init_from=src, seq_len=32, max_steps=4, alpha=0.1)
    part = tmp_path / "part"
    train_tiny(part, stop_at=2, arch="hf", init_from=src, seq_len=32, max_steps=4, alpha=0.1)
    train_tiny(part, arch="hf", init_from=src, seq_len=32, max_steps=4, alpha=0.1, resume=True)
    assert [r["loss"] for r in metrics(part)] == [r["loss"] for r in metrics(full)]


def test_bad_hf_inputs_are_one_line_errors(hf_dirs, tmp_path, capsys):
    from olharness.export_hf import export
    run = build_checkpoint(tmp_path, "decoder")
    exported = export(run, tmp_path / "exported")
    base = ["--preset", "tiny", "--arch", "hf", "--max_steps", "1"]
    cases = [(["--init_from", str(exported)], "ships its own model code.*--trust_remote_code"),
             (["--init_from", str(hf_dirs["gpt2"]), "--rope_scaling", "pi", "--rope_scale", "2"],
              "rope scaling needs a RoPE model; gpt2"),
             (["--init_from", str(hf_dirs["llama"]), "--rope_scaling", "longrope"], "unknown rope scaling method"),
             (["--init_from", str(exported), "--trust_remote_code", "--rope_scaling", "yarn", "--rope_scale", "2"],
              "yarn is not available for our exported decoder"),
             (["--init_from", str(exported), "--trust_remote_code", "--gradient_checkpointing"],
              "does not support --gradient_checkpointing"),
             ([], "--arch hf needs --init_from")]
    import re
    for i, (args, msg) in enumerate(cases):
        assert main(base + args + ["--out", str(tmp_path / f"bad{i}")]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(err) == 1 and re.search(msg, err[0]), (args, err)


def test_gradient_checkpointing_gives_the_same_step(hf_dirs, tmp_path):
    src = str(hf_dirs["llama"])
    a = train_tiny(tmp_path / "a", arch="hf", init_from=src, seq_len=32, max_steps=2)
    b = train_tiny(tmp_path / "b", arch="hf", init_from=src, seq_len=32, max_steps=2, gradient_checkpointing=True)
    assert [r["loss"] for r in metrics(a)] == pytest.approx([r["loss"] for r in metrics(b)], abs=1e-5)
    model, _ = load_pretrained(hf_config(src, tmp_path, gradient_checkpointing=True), tmp_path)
    assert model.hf.is_gradient_checkpointing


@pytest.mark.parametrize("div", ["sce", "kl", "js"])
def test_chunked_logits_term_equals_the_direct_one(monkeypatch, div):
    """The misalignment term over a long overlap is computed in chunks (trainer/alignment/targets.py);
    value and both gradients equal the one-shot computation."""
    from trainer.alignment import targets
    from trainer.alignment.divergences import build_divergence
    from trainer.config import AlignConfig
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(2, 40, 30, generator=g) * 3, torch.randn(2, 40, 30, generator=g) * 3
    e = 7
    li, si = slice(e, 40), slice(0, 40 - e)  # every shipped scope is a run of positions: a slice

    def run(chunk):
        monkeypatch.setattr(targets, "CHUNK", chunk)
        a, b = za.clone().requires_grad_(), zb.clone().requires_grad_()
        v = targets._logits(targets.Out(a), targets.Out(b), li, si, build_divergence(div), AlignConfig())
        (3.0 * v).backward()
        return v.detach(), a.grad, b.grad
    direct, chunked = run(10_000), run(5)
    for x, y in zip(direct, chunked):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-7)
    assert chunked[1][:, :e].abs().max() == 0 and chunked[2][:, 40 - e:].abs().max() == 0
