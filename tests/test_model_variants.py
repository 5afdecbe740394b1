"""GPT variants are configurations, not classes: for every combination of norm,
positions, feed-forward, key/value heads and biases, the KV cache gives the same logits
as recomputing (also past the trained length, where the scheme allows it) and every
parameter passes a gradient check. A LLaMA-style config has what it should; the
encoder-decoder's T5 option is tested with the other Transformer tests."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn
from test_components import paper_alibi_slopes
from test_models import check_all_grads, dev, seeds

variants = st.fixed_dictionaries(dict(
    norm=st.sampled_from(["layer", "rms"]),
    positions=st.sampled_from(nn.models.GPT_POSITIONS),
    activation=st.sampled_from(["gelu", "relu", "swiglu", "geglu"]),
    num_kv_heads=st.sampled_from([None, 1, 2]),
    bias=st.booleans(), recompute=st.booleans()))


def variant_gpt(seed, variant, **overrides):
    mt.manual_seed(seed)
    config = dict(vocab_size=11, max_len=6, d_model=8, num_heads=4, num_layers=2, d_ff=6,
                  dropout=0.0, **variant)
    return nn.GPT(nn.GPTConfig(**{**config, **overrides})).to(dtype=np.float64).eval()


@settings(max_examples=24)
@given(seed=seeds, variant=variants,
       chunks=st.lists(st.integers(1, 3), min_size=1, max_size=4))
def test_every_variant_caches_exactly(seed, variant, chunks):
    model = variant_gpt(seed, variant)
    if variant["positions"] == "learned":  # the only scheme bound to max_len = 6
        chunks = chunks[:2]
    ids = dev(np.random.default_rng(seed).integers(0, 11, (2, sum(chunks))))
    full = model(ids).numpy()
    cache, parts, past = model.new_cache(), [], 0
    with mt.no_grad():
        for n in chunks:
            parts.append(model(ids[:, past:past + n], cache=cache).numpy())
            past += n
    kv_heads = variant["num_kv_heads"] or 4
    assert cache.self_attention[0].keys.shape == (2, kv_heads, sum(chunks), 2)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-9, atol=1e-12)


@settings(max_examples=12)
@given(seed=seeds, variant=variants, length=st.integers(1, 4))
def test_every_variant_has_correct_gradients(seed, variant, length):
    model = variant_gpt(seed, variant, num_layers=1)
    ids = dev(np.random.default_rng(seed).integers(0, 11, (2, length)))
    check_all_grads(lambda: model(ids), model, directions=2)


def test_llama_style_config():
    model = variant_gpt(0, dict(norm="rms", positions="rope", activation="swiglu",
                                num_kv_heads=2, bias=False))
    modules = list(model.modules())
    assert not any(isinstance(m, (nn.LayerNorm, nn.LearnedPositionalEmbedding))
                   for m in modules)
    assert all(m.bias is None for m in modules if isinstance(m, nn.Linear))
    attention = model.blocks[0].self_attn
    assert attention.w_k.weight.shape == (4, 8) and attention.rotary_base == 10000.0
    assert model.blocks[0].feed_forward.gate is not None
    assert model(dev(np.ones((1, 20), np.int64))).shape == (1, 20, 11)  # past max_len
    with pytest.raises(ValueError, match="positions must be one of .* got 'rotary'"):
        variant_gpt(0, dict(positions="rotary"))
    with pytest.raises(ValueError, match="norm must be 'layer' or 'rms', got 'batch'"):
        variant_gpt(0, dict(norm="batch"))


def test_positions_change_what_the_model_computes():
    """Each scheme really acts: in one layer without positions the last token attends to
    a set, so swapping two earlier tokens leaves its logits unchanged; every other scheme
    sees the swap. (With more layers, the causal mask alone leaks positions.)"""
    ids, swapped = dev([[1, 2, 3, 4]]), dev([[2, 1, 3, 4]])
    for positions in nn.models.GPT_POSITIONS:
        model = variant_gpt(3, dict(positions=positions), num_layers=1)
        if positions == "t5":  # a fresh bias is nearly zero; give it some size
            model.relative_bias.weight.data *= 100
        same = np.allclose(model(ids).numpy()[0, -1], model(swapped).numpy()[0, -1],
                           rtol=1e-12, atol=1e-12)
        assert same == (positions == "none"), positions


def test_alibi_gpt_in_float64_uses_the_exact_slopes():
    """12 heads: the slopes 2^(-k/2) are not powers of two, so a float32 bias would be
    off by ~1e-7 relative; a float64 model gets them in float64 (the paper's values)."""
    model = variant_gpt(0, dict(positions="alibi"), num_heads=12, d_model=24)
    ids = dev(np.random.default_rng(0).integers(0, 11, (2, 9)))
    slopes = np.array(paper_alibi_slopes(12))
    distance = np.abs(np.arange(9)[:, None] - np.arange(9)[None, :])
    bias = mt.tensor(-slopes[:, None, None] * distance)
    x = model.token_embedding(ids)
    for block in model.blocks:
        x = block(x, mt.masks.causal_mask(9, device=x.device), None, bias)
    expected = model.lm_head(model.final_norm(x)).numpy()
    np.testing.assert_allclose(model(ids).numpy(), expected, rtol=0, atol=1e-14)
