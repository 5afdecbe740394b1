"""Scaled dot-product attention: equal, in value and gradient, to attention composed from
primitive ops, for broadcast batch dims, grouped-query heads, additive biases and masks
with fully masked query rows; weights
that sum to 1 (or 0 on a fully masked row) and carry no graph; dropout; clear errors."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.functional.attention import (ScaledDotProductAttention,
                                                  check_attention_arguments)
from strategies import arrays, host, leaf
from test_functional import assert_same, composed_log_softmax, seeds


@st.composite
def attention_inputs(draw):
    """q, k, v with batch dims (B, H) (k and v with H, 1 or, grouped, H/2 heads), a
    boolean mask broadcastable to (B, H, Lq, Lk), often with fully masked query rows, and
    (with ``with_bias``) a float bias broadcastable to (B, H, Lq, Lk) or None."""
    b, lq, lk, dk, dv = (draw(st.integers(1, 3)) for _ in range(5))
    h = draw(st.integers(1, 4))
    kv_heads = draw(st.sampled_from([h, 1] + ([h // 2] if h % 2 == 0 else [])))
    q = draw(arrays((b, h, lq, dk)))
    k = draw(arrays((b, kv_heads, lk, dk)))
    v = draw(arrays((b, kv_heads, lk, dv)))
    full = (b, h, lq, lk)

    def broadcastable():
        shape = tuple(draw(st.sampled_from([1, n])) for n in full)
        return shape[draw(st.integers(0, 4)):]  # down to a 0-d array
    mask = draw(st.none() | hnp.arrays(bool, broadcastable()))
    bias = draw(st.none() | arrays(broadcastable()))
    return q, k, v, mask, bias


def composed_attention(q, k, v, mask, bias=None):
    if k.shape[1] not in (1, q.shape[1]):  # grouped: query head h reads kv head h // G
        kv_head = np.arange(q.shape[1]) // (q.shape[1] // k.shape[1])
        k, v = k[:, kv_head], v[:, kv_head]
    scores = (q @ k.swapaxes(-1, -2)) * (1 / math.sqrt(q.shape[-1]))
    if bias is not None:
        scores = scores + bias
    if mask is None:
        return composed_log_softmax(scores, -1).exp() @ v
    full = np.broadcast_to(mask, scores.shape)
    probs = composed_log_softmax(mt.where(mt.tensor(full), scores, -1e9), -1).exp()
    any_key = mt.tensor(full.any(axis=-1, keepdims=True).astype(np.float64))
    return (probs * any_key) @ v


@given(inputs=attention_inputs(), which=st.sampled_from(["qkvb", "q", "k", "v", "b"]))
def test_attention_equals_composed(inputs, which):
    q, k, v, mask, bias = inputs
    bias = np.zeros((1, 1)) if bias is None else bias
    tensors = [leaf(a, requires_grad=name in which)
               for a, name in zip((q, k, v, bias), "qkvb")]
    m = None if mask is None else mt.tensor(mask)

    def fused(q, k, v, b):
        return F.scaled_dot_product_attention(q, k, v, mask=m, bias=b)[0]
    assert_same(fused, lambda *t: composed_attention(*t[:3], mask, t[3]), tensors)
    assert mt.gradcheck(fused, tensors)


@given(inputs=attention_inputs())
def test_attention_weights_and_fully_masked_rows(inputs):
    q, k, v, mask, _ = inputs
    tensors = [leaf(a) for a in (q, k, v)]
    out, weights = F.scaled_dot_product_attention(*tensors, mask=mask)
    assert not weights.requires_grad and weights.shape == (*out.shape[:-1], k.shape[-2])
    sums = weights.numpy().sum(axis=-1)
    if mask is None:
        np.testing.assert_allclose(sums, 1, rtol=1e-12)
        return
    full = np.broadcast_to(mask, weights.shape)
    assert (weights.numpy()[~full] == 0).all()
    np.testing.assert_allclose(sums, full.any(axis=-1).astype(float), rtol=1e-12)
    empty = ~full.any(axis=-1)
    assert (out.numpy()[empty] == 0).all()
    out.backward(mt.tensor(np.ones(out.shape)))
    assert all(np.isfinite(host(t.grad)).all() for t in tensors)


@settings(max_examples=8)
@given(inputs=attention_inputs(), use_output=st.booleans())
def test_attention_weights_as_a_second_output_are_differentiable(inputs, use_output):
    """The fused node returns the weights as a second output: when they feed the loss
    (with the output or alone), their gradient flows back through the softmax too."""
    q, k, v, mask, bias = inputs
    tensors = [leaf(a) for a in (q, k, v)] + ([] if bias is None else [leaf(bias)])

    def attend(q, k, v, b=None):
        q, k, v, m, b, _ = check_attention_arguments("attend", q, k, v, mask, b, 0.0)
        out, weights = ScaledDotProductAttention.apply(
            *(t for t in (q, k, v, b) if t is not None), mask=m)
        return mt.concatenate([out, weights], axis=-1) if use_output else weights
    assert mt.gradcheck(attend, tensors)


@settings(max_examples=6)
@given(inputs=attention_inputs(), seed=seeds)
def test_attention_dropout_gradient(inputs, seed):
    q, k, v, mask, bias = inputs
    tensors = [leaf(a) for a in (q, k, v)] + ([] if bias is None else [leaf(bias)])

    def attend(q, k, v, b=None):
        mt.manual_seed(seed)  # the same dropout mask on every call
        return F.scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=0.4, bias=b)[0]
    assert mt.gradcheck(attend, tensors)
    mt.manual_seed(seed)
    without = F.scaled_dot_product_attention(*tensors[:3], mask=mask, dropout_p=0.4,
                                             training=False, bias=bias)[0]
    np.testing.assert_array_equal(without.numpy(), F.scaled_dot_product_attention(
        *tensors[:3], mask=mask, bias=bias)[0].numpy())


def test_attention_dropout_drops_weights_but_reports_them_before():
    mt.manual_seed(0)
    q = k = v = mt.tensor(np.random.default_rng(0).standard_normal((1, 1, 64, 8)))
    out, weights = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    np.testing.assert_allclose(weights.numpy().sum(axis=-1), 1, rtol=1e-12)
    assert not np.allclose(out.numpy(), (weights.numpy() @ v.numpy()))


def test_attention_softmax_in_cache_sized_blocks_equals_the_whole(monkeypatch):
    """Scores above common.PIECE elements are normalised block by block of rows (on the
    CPU): the very same weights and output as in one piece, fully masked rows included."""
    from minitransformer.functional import common
    rng = np.random.default_rng(0)
    q, k, v = (mt.tensor(rng.standard_normal((2, 3, 150, 8)).astype(np.float32))
               for _ in range(3))
    mask = rng.random((2, 1, 150, 150)) > 0.3
    mask[0, 0, 5] = False  # a query with nothing to attend to
    results = []
    for piece in (1100, q.size * 1000):  # blocks of 7 rows (the last one short), then whole
        monkeypatch.setattr(common, "PIECE", piece)
        out, weights = F.scaled_dot_product_attention(q, k, v, mask)
        results.append((out.numpy(), weights.numpy()))
    for blocks, whole in zip(*results):
        np.testing.assert_array_equal(blocks, whole)
    assert (results[0][1][0, :, 5] == 0).all() and (results[0][0][0, :, 5] == 0).all()


def test_attention_errors_name_shapes_and_dtypes():
    q, k = leaf(np.ones((2, 3, 4))), leaf(np.ones((2, 5, 4)))
    attend = F.scaled_dot_product_attention
    with pytest.raises(TypeError, match="mask must be boolean .* got dtype float64"):
        attend(q, k, k, mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"mask has shape \(3, 4\), expected one that "
                                         r"broadcasts to .* \(2, 3, 5\)"):
        attend(q, k, k, mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match=r"k has last dim 3, expected 4"):
        attend(q, leaf(np.ones((2, 5, 3))), k)
    with pytest.raises(ValueError, match=r"v has 4 positions, expected 5"):
        attend(q, k, leaf(np.ones((2, 4, 4))))
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1"):
        attend(q, k, k, dropout_p=1)
    with pytest.raises(TypeError, match="bias must be a float array .* got dtype bool"):
        attend(q, k, k, bias=np.ones((3, 5), bool))
    with pytest.raises(ValueError, match=r"bias has shape \(2, 3, 4\), expected one that "
                                         r"broadcasts to .* \(2, 3, 5\)"):
        attend(q, k, k, bias=np.ones((2, 3, 4)))
    q4, k4 = leaf(np.ones((1, 4, 2, 3))), leaf(np.ones((1, 3, 2, 3)))
    with pytest.raises(ValueError, match="q has 4 heads and k 3 .* dividing q's"):
        attend(q4, k4, k4)
