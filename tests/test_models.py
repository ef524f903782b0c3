"""Model families: shapes, incremental decoding == full forward, memorisation, PE behaviour."""
import pytest
import torch

from trainer.config import preset
from trainer.errors import OLHError
from trainer.models import MODELS, POSITIONAL, ROPE_SCALING, build_model

FAMILIES = [("decoder", pe, "lstm") for pe in POSITIONAL.names()] + \
           [("encdec", pe, "lstm") for pe in POSITIONAL.names()] + [("rnn", "nope", "lstm"), ("rnn", "nope", "gru")]


def tiny(arch, pe="rope", cell="lstm", **kw):
    c = preset("tiny").model
    c.arch, c.pe, c.cell = arch, pe, cell
    for k, v in kw.items():
        setattr(c, k, v)
    torch.manual_seed(0)
    return build_model(c).eval(), c


def run(m, x, enc=None, **kw):
    return m(x, **kw) if m.kind == "causal" else m(enc, x, **kw)


@pytest.mark.parametrize("arch,pe,cell", FAMILIES)
def test_incremental_decoding_matches_full_forward(arch, pe, cell):
    m, c = tiny(arch, pe, cell)
    x = torch.randint(0, c.vocab_size, (2, 11))
    enc = torch.randint(0, c.vocab_size, (2, 7))
    full = run(m, x, enc)
    cache = m.new_cache()
    parts = [run(m, x[:, :4], enc, cache=cache), run(m, x[:, 4:5], None, cache=cache),
             run(m, x[:, 5:], None, cache=cache)]
    assert full.shape == (2, 11, c.vocab_size)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,pe,cell", FAMILIES)
def test_hidden_states_per_layer_and_normalized(arch, pe, cell):
    m, c = tiny(arch, pe, cell)
    x = torch.randint(0, c.vocab_size, (2, 9))
    logits, hs = run(m, x, torch.randint(0, c.vocab_size, (2, 5)), return_hidden=True)
    assert len(hs) == c.n_layer and all(h.shape == (2, 9, c.d_model) for h in hs)
    torch.testing.assert_close(hs[-1].mean(-1), torch.zeros(2, 9), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["decoder", "encdec", "rnn"])
def test_memorises_a_batch(arch):
    m, c = tiny(arch)
    m.train()
    x = torch.randint(0, c.vocab_size, (4, 16))
    enc = torch.randint(0, c.vocab_size, (4, 8))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        logits = run(m, x[:, :-1], enc)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_causality_future_tokens_do_not_change_past_logits():
    for pe in POSITIONAL.names():
        m, c = tiny("decoder", pe)
        x = torch.randint(0, c.vocab_size, (1, 10))
        y = x.clone()
        y[0, 7:] = (y[0, 7:] + 1) % c.vocab_size
        torch.testing.assert_close(m(x)[:, :7], m(y)[:, :7])


def test_nope_decoder_is_position_blind_but_learned_pe_is_not():
    # one token repeated: without positions every causal prefix looks the same, so NoPE's logits are
    # identical at every position; a learned position table makes them differ
    m, c = tiny("decoder", "learned")
    m2, _ = tiny("decoder", "nope")
    const = torch.full((1, 6), 5)
    out = m2(const)
    torch.testing.assert_close(out[:, 0], out[:, 5], atol=1e-5, rtol=1e-5)
    out = m(const)
    assert (out[:, 0] - out[:, 5]).abs().max() > 1e-4


def test_learned_pe_beyond_table_is_a_clear_error():
    m, c = tiny("decoder", "learned", max_positions=8)
    with pytest.raises(OLHError, match="max_positions"):
        m(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("method", ROPE_SCALING.names())
def test_rope_scaling_methods(method):
    base, _ = tiny("decoder", "rope")
    m, c = tiny("decoder", "rope", rope_scaling=method, rope_scale=4.0)
    m.load_state_dict(base.state_dict())
    pe, pe0 = m.pe, base.pe
    if method == "none":
        torch.testing.assert_close(pe.inv_freq, pe0.inv_freq)
        assert pe.pos_scale == 1.0
    elif method == "pi":  # same frequencies, positions compressed 4x
        torch.testing.assert_close(pe.inv_freq, pe0.inv_freq)
        assert pe.pos_scale == 4.0
    else:  # ntk / abf: a larger base lowers every frequency but the first (which is 1)
        assert pe.pos_scale == 1.0
        assert torch.all(pe.inv_freq[1:] < pe0.inv_freq[1:]) and pe.inv_freq[0] == pe0.inv_freq[0] == 1.0


def test_registries_reject_unknown_names_listing_valid_ones():
    c = preset("tiny").model
    c.arch = "transformerxl"
    with pytest.raises(OLHError, match=r"unknown model architecture 'transformerxl'; valid: decoder, encdec, hf, rnn"):
        build_model(c)
    c.arch, c.pe = "decoder", "t5bias"
    with pytest.raises(OLHError, match="valid: nope, learned, sinusoidal, rope, alibi"):
        build_model(c)
    c.arch, c.cell = "rnn", "elman"
    with pytest.raises(OLHError, match="valid: lstm, gru"):
        build_model(c)
    assert MODELS.names() == ["decoder", "encdec", "hf", "rnn"]
