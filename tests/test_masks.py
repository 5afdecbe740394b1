"""Padding and causal masks (True = may attend), combining them, and what they do to
attention: a masked key gets zero weight and cannot influence any output."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.masks import causal_mask, combine_masks, padding_mask
from strategies import host

lengths = st.integers(1, 6)


@given(ids=hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=5),
                      elements=st.integers(0, 3)), pad_id=st.integers(0, 3))
def test_padding_mask(ids, pad_id):
    for given_ids in (ids, mt.tensor(ids), ids.tolist()):
        mask = padding_mask(given_ids, pad_id)
        assert mask.shape == (ids.shape[0], 1, 1, ids.shape[1]) and mask.dtype == bool
        np.testing.assert_array_equal(host(mask)[:, 0, 0], ids != pad_id)


def test_padding_mask_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"ids must be a 2-D integer array \(B, L\), got "
                                         r"shape \(3,\)"):
        padding_mask(np.array([1, 2, 0]), 0)
    with pytest.raises(ValueError, match="got shape .* and dtype float64"):
        padding_mask(np.zeros((2, 3)), 0)
    with pytest.raises(TypeError, match="pad_id must be an int, got 0.5"):
        padding_mask(np.zeros((2, 3), int), 0.5)


@given(length=lengths)
def test_causal_mask_is_lower_triangular(length):
    mask = causal_mask(length)
    assert mask.shape == (1, 1, length, length) and mask.dtype == bool
    np.testing.assert_array_equal(host(mask)[0, 0], np.tril(np.ones((length, length), bool)))


@given(k_len=lengths, data=st.data())
def test_causal_mask_for_the_last_queries_is_the_bottom_of_the_full_mask(k_len, data):
    q_len = data.draw(st.integers(1, k_len))
    mask = host(causal_mask(q_len, k_len))
    assert mask.shape == (1, 1, q_len, k_len)
    np.testing.assert_array_equal(mask, host(causal_mask(k_len))[:, :, k_len - q_len:])
    i, j = np.indices((q_len, k_len))
    np.testing.assert_array_equal(mask[0, 0], j <= k_len - q_len + i)


def test_causal_mask_errors():
    with pytest.raises(ValueError, match="q_len=4 exceeds k_len=2"):
        causal_mask(4, 2)
    with pytest.raises(ValueError, match="q_len must be a positive int, got 0"):
        causal_mask(0)
    with pytest.raises(ValueError, match="k_len must be a positive int, got 2.5"):
        causal_mask(1, 2.5)


@given(ids=hnp.arrays(np.int64, (2, 4), elements=st.integers(0, 2)),
       extra=hnp.arrays(bool, st.sampled_from([(4,), (1, 4, 4), (2, 1, 4, 1)])))
def test_combine_masks_is_a_broadcast_and_skipping_none(ids, extra):
    pad, causal = padding_mask(mt.tensor(ids), 0), causal_mask(4)
    combined = combine_masks(None, pad, causal, None, mt.tensor(extra).data)
    expected = host(pad) & host(causal) & extra
    np.testing.assert_array_equal(host(combined), expected)
    np.testing.assert_array_equal(host(combine_masks(pad)), host(pad))
    assert combine_masks() is None and combine_masks(None, None) is None


def test_combine_masks_errors():
    with pytest.raises(TypeError, match="mask 1 has dtype int64, expected bool"):
        combine_masks(causal_mask(3), np.ones((3, 3), np.int64))
    with pytest.raises(ValueError, match=r"shapes \(1, 1, 3, 3\), \(1, 1, 4, 4\) do not "
                                         "broadcast"):
        combine_masks(causal_mask(3), causal_mask(4))


def test_padded_keys_cannot_influence_outputs():
    rng = np.random.default_rng(0)
    ids = np.array([[5, 6, 7, 0, 0], [5, 6, 0, 0, 0]])
    q, k, v = (rng.standard_normal((2, 2, 5, 3)) for _ in range(3))
    mask = combine_masks(padding_mask(mt.tensor(ids), 0), causal_mask(5))
    out, weights = F.scaled_dot_product_attention(mt.tensor(q), mt.tensor(k), mt.tensor(v),
                                                  mask=mask)
    assert (weights.numpy()[0, :, :, 3:] == 0).all() and (weights.numpy()[1, :, :, 2:] == 0).all()
    k[:, :, 3:] += 10  # change the padded keys and values, and the future, of row 0
    v[:, :, 3:] -= 10
    changed, _ = F.scaled_dot_product_attention(mt.tensor(q), mt.tensor(k), mt.tensor(v),
                                                mask=mask)
    np.testing.assert_allclose(changed.numpy()[0], out.numpy()[0], rtol=1e-12)
    np.testing.assert_allclose(changed.numpy()[1, :, :3], out.numpy()[1, :, :3], rtol=1e-12)


@given(k_len=st.integers(2, 6), data=st.data())
def test_incremental_causal_attention_equals_the_full_pass(k_len, data):
    """Attending from the last q_len queries with causal_mask(q_len, k_len) gives the last
    q_len rows of full causal attention: what a KV cache relies on."""
    q_len = data.draw(st.integers(1, k_len))
    rng = np.random.default_rng(k_len)
    q, k, v = (mt.tensor(rng.standard_normal((1, 2, k_len, 3))) for _ in range(3))
    full, _ = F.scaled_dot_product_attention(q, k, v, mask=causal_mask(k_len))
    last, _ = F.scaled_dot_product_attention(q[:, :, k_len - q_len:], k, v,
                                             mask=causal_mask(q_len, k_len))
    np.testing.assert_allclose(last.numpy(), full.numpy()[:, :, k_len - q_len:], rtol=1e-12)
