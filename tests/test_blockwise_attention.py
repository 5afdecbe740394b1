"""Blockwise (FlashAttention-style) attention: equal, in value and every gradient, to
scaled_dot_product_attention for ragged lengths (not multiples of the block), masks with
fully masked rows, the causal case, additive biases and broadcast or grouped heads;
dropout replayed exactly in the backward pass; models built with either attention."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.functional.blockwise_attention import _tiles
from strategies import leaf
from test_functional import assert_same, seeds
from test_functional_attention import attention_inputs


def causal_and(mask, lq, lk):
    """``mask`` combined with the causal mask (queries aligned to the end of the keys)."""
    causal = np.tril(np.ones((lq, lk), bool), k=lk - lq)
    return causal if mask is None else mask & causal


@given(inputs=attention_inputs(), block=st.integers(1, 4), causal=st.booleans(),
       which=st.sampled_from(["qkvb", "q", "k", "v", "b"]))
def test_blockwise_equals_plain_attention(inputs, block, causal, which):
    """Value and every gradient, with GQA heads, a bias, masks and causal tile skipping."""
    q, k, v, mask, bias = inputs
    bias = np.zeros((1, 1)) if bias is None else bias
    tensors = [leaf(a, requires_grad=name in which)
               for a, name in zip((q, k, v, bias), "qkvb")]
    plain_mask = causal_and(mask, q.shape[-2], k.shape[-2]) if causal else mask

    def blockwise(q, k, v, b):
        return F.blockwise_attention(q, k, v, mask, b, causal=causal, block_size=block)
    assert_same(blockwise,
                lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, plain_mask,
                                                                  bias=b)[0], tensors)
    if which == "qkvb":
        assert mt.gradcheck(blockwise, tensors)


@settings(max_examples=6)
@given(inputs=attention_inputs(), seed=seeds, block=st.integers(1, 3))
def test_blockwise_dropout_is_replayed_in_backward(inputs, seed, block):
    q, k, v, mask, _ = inputs
    tensors = [leaf(a) for a in (q, k, v)]

    def attend(*t):
        mt.manual_seed(seed)
        return F.blockwise_attention(*t, mask=mask, dropout_p=0.4, block_size=block)
    assert mt.gradcheck(attend, tensors)  # backward redraws the forward's keep masks
    mt.manual_seed(seed)
    out = F.blockwise_attention(*tensors, mask=mask, dropout_p=0.4, block_size=block)
    after_forward = mt.backend.rng().random()
    mt.manual_seed(seed)
    out = F.blockwise_attention(*tensors, mask=mask, dropout_p=0.4, block_size=block)
    out.sum().backward()
    assert mt.backend.rng().random() == after_forward  # backward leaves the stream alone
    evaluated = F.blockwise_attention(*tensors, mask=mask, dropout_p=0.4, training=False)
    np.testing.assert_allclose(evaluated.numpy(),
                               F.blockwise_attention(*tensors, mask=mask).numpy())


def test_causal_tiles_above_the_diagonal_are_skipped():
    tiles = list(_tiles(8, 8, 2, causal=True))
    assert len(tiles) == 4 + 3 + 2 + 1  # of 16, only those on or below the diagonal
    assert sum(diagonal for *_, diagonal in tiles) == 4
    assert len(list(_tiles(3, 8, 2, causal=True))) == 4 + 4  # queries end-aligned


def test_blockwise_errors_name_the_argument():
    q, k = leaf(np.ones((2, 3, 4))), leaf(np.ones((2, 5, 4)))
    attend = F.blockwise_attention
    with pytest.raises(TypeError, match="mask must be boolean .* got dtype float64"):
        attend(q, k, k, mask=np.ones((3, 5)))
    with pytest.raises(TypeError, match="bias must be a float array .* got dtype bool"):
        attend(q, k, k, bias=np.ones((3, 5), bool))
    with pytest.raises(ValueError, match=r"bias has shape \(3, 4\), expected one that "
                                         r"broadcasts to .* \(2, 3, 5\)"):
        attend(q, k, k, bias=np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"k has last dim 3, expected 4"):
        attend(q, leaf(np.ones((2, 5, 3))), k)
    with pytest.raises(ValueError, match="block_size must be a positive integer, got 0"):
        attend(q, k, k, block_size=0)
    with pytest.raises(TypeError, match="block_size must be an integer, got 2.0"):
        attend(q, k, k, block_size=2.0)
    with pytest.raises(TypeError, match="blockwise_attention: causal must be True or False, "
                                        "got 'yes'"):
        attend(q, k, k, causal="yes")
    with pytest.raises(TypeError, match="MultiHeadAttention: causal must be True or False, "
                                        "got None"):
        mt.nn.MultiHeadAttention(8, 2, causal=None)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1"):
        attend(q, k, k, dropout_p=1)


@pytest.mark.parametrize("model", ["gpt", "transformer"])
def test_models_with_blockwise_attention_match_plain(model):
    """The same weights give the same logits and gradients with either attention, and
    incremental decoding with a KV cache (Lq = 1 over all cached keys) works too."""
    ids = mt.tensor(np.random.default_rng(0).integers(1, 11, (2, 7)))
    results = []
    for attention in ("plain", "blockwise"):
        mt.manual_seed(0)
        if model == "gpt":
            net = mt.nn.GPT(mt.nn.GPTConfig(11, max_len=8, d_model=8, num_heads=2,
                                            num_layers=2, dropout=0.0, attention=attention,
                                            attention_block_size=3))
            run = lambda: net(ids)  # noqa: E731
        else:
            net = mt.nn.Transformer(mt.nn.TransformerConfig(
                11, 11, d_model=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=2,
                d_ff=16, dropout=0.0, attention=attention, attention_block_size=2))
            run = lambda: net(ids, ids[:, :5])  # noqa: E731
        net.to(dtype="float64")
        logits = run()
        logits.sum().backward()
        results.append((logits.numpy(), [p.grad for p in net.parameters()]))
        if model == "gpt":
            cache = net.new_cache()
            stepped = [net(ids[:, i:i + 1], cache=cache).numpy() for i in range(7)]
            np.testing.assert_allclose(np.concatenate(stepped, axis=1), logits.numpy(),
                                       atol=1e-10)
    (plain, plain_grads), (blockwise, blockwise_grads) = results
    np.testing.assert_allclose(blockwise, plain, atol=1e-10)
    for a, b in zip(blockwise_grads, plain_grads):
        np.testing.assert_allclose(mt.backend.to_numpy(a), mt.backend.to_numpy(b), atol=1e-10)


def test_multi_head_attention_rejects_unknown_attention():
    with pytest.raises(ValueError, match="attention must be 'plain' or 'blockwise', got 'x'"):
        mt.nn.MultiHeadAttention(8, 2, attention="x")


def test_gpt_gives_blockwise_attention_the_causal_flag_not_a_mask(monkeypatch):
    """GPT's causal blocks reach the tile skipping: no (L, L) mask is built for them."""
    calls = []

    def spy(q, k, v, mask, bias, causal, *rest):
        calls.append((mask, causal))
        return blockwise(q, k, v, mask, bias, causal, *rest)
    blockwise = F.blockwise_attention
    monkeypatch.setattr(F, "blockwise_attention", spy)
    net = mt.nn.GPT(mt.nn.GPTConfig(11, max_len=8, d_model=8, num_heads=2, num_layers=2,
                                    attention="blockwise", attention_block_size=2))
    net(mt.tensor(np.ones((1, 6), int)))
    assert calls == [(None, True)] * 2
    assert "causal=True" in repr(net.blocks[0].self_attn)
