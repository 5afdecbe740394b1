"""The newer components: SiLU, RMSNorm and RoPE equal their compositions from primitive
ops and pass gradient checks; RoPE keeps norms and makes q.k depend on m - n only;
ALiBi slopes and biases and T5's buckets against values written out from their
definitions; gated feed-forwards, RMSNorm and the relative bias as modules."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import functional as F
from minitransformer import masks, nn
from strategies import arrays, host, leaf
from test_functional import assert_same, seeds

lead_dims = st.lists(st.integers(1, 3), max_size=2)


@given(data=st.data(), lead=lead_dims, dim=st.integers(1, 5))
def test_silu_equals_composed(data, lead, dim):
    x = leaf(data.draw(arrays((*lead, dim), -8, 8)))
    assert_same(F.silu, lambda x: x * (1 / (1 + (-x).exp())), [x])
    assert mt.gradcheck(F.silu, [x])


def composed_rms_norm(x, weight, eps):
    out = x / ((x * x).mean(axis=-1, keepdims=True) + eps).sqrt()
    return out if weight is None else out * weight


@given(data=st.data(), lead=lead_dims, dim=st.integers(1, 5), has_weight=st.booleans(),
       eps=st.sampled_from([1e-6, 1e-2]))
def test_rms_norm_equals_composed(data, lead, dim, has_weight, eps):
    x = leaf(data.draw(arrays((*lead, dim))) + 0.5)  # keep every row away from zero
    params = [leaf(data.draw(arrays((dim,))))] if has_weight else []

    def call(fn):
        return lambda x, *w: fn(x, w[0] if w else None, eps)
    assert_same(call(F.rms_norm), call(composed_rms_norm), [x, *params], tol=1e-9)
    assert mt.gradcheck(call(F.rms_norm), [x, *params])
    with pytest.raises(ValueError, match=r"rms_norm: weight has shape \(7,\), expected"):
        F.rms_norm(x, leaf(np.ones(7)))


def composed_rotary(x, positions, base=10000.0):
    d = x.shape[-1]
    angles = np.asarray(positions)[..., None] * base ** (-np.arange(0, d, 2) / d)
    cos, sin = (mt.tensor(np.concatenate([f(angles)] * 2, -1)) for f in (np.cos, np.sin))
    rotated_half = mt.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    return x * cos + rotated_half * sin


@given(data=st.data(), lead=lead_dims, length=st.integers(1, 4), half=st.integers(1, 3),
       base=st.sampled_from([10000.0, 10.0]))
def test_rotary_equals_composed_and_keeps_norms(data, lead, length, half, base):
    x = leaf(data.draw(arrays((*lead, length, 2 * half))))
    positions = np.array(data.draw(st.lists(st.integers(0, 50), min_size=length,
                                            max_size=length)))
    rope = lambda x: F.rotary_embedding(x, positions, base)  # noqa: E731
    assert_same(rope, lambda x: composed_rotary(x, positions, base), [x])
    assert mt.gradcheck(rope, [x])
    np.testing.assert_allclose(np.linalg.norm(rope(x).numpy(), axis=-1),
                               np.linalg.norm(x.numpy(), axis=-1), rtol=1e-12, atol=1e-12)


@given(data=st.data(), m=st.integers(0, 40), n=st.integers(0, 40), shift=st.integers(1, 30))
def test_rotary_scores_depend_on_the_offset_only(data, m, n, shift):
    q, k = (leaf(data.draw(arrays((1, 6), -1, 1))) for _ in range(2))

    def score(m, n):
        return (F.rotary_embedding(q, [m]) * F.rotary_embedding(k, [n])).sum().item()
    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-12)
    if m == n:
        assert score(m, n) == pytest.approx((q * k).sum().item(), abs=1e-12)


def test_rotary_half_split_convention_and_errors():
    x = leaf(np.array([[1.0, 0.0, 0.0, 0.0]]))  # pair 0 = (x[0], x[2]) turns by p * 1
    np.testing.assert_allclose(F.rotary_embedding(x, [2]).numpy(),
                               [[np.cos(2), 0, np.sin(2), 0]], atol=1e-15)
    with pytest.raises(ValueError, match=r"even d, got shape \(1, 3\)"):
        F.rotary_embedding(leaf(np.ones((1, 3))), [0])
    with pytest.raises(TypeError, match="positions must be integers, got dtype float64"):
        F.rotary_embedding(x, [0.5])
    with pytest.raises(ValueError, match=r"positions has shape \(2,\), expected one that "
                                         r"broadcasts to x's \(\.\.\., L\) = \(1,\)"):
        F.rotary_embedding(x, [0, 1])


def test_alibi_slopes_follow_the_paper():
    assert masks.alibi_slopes(8) == [2.0 ** -k for k in range(1, 9)]
    assert masks.alibi_slopes(4) == [2.0 ** -k for k in (2, 4, 6, 8)]
    # 6 heads: the 4-head slopes, then every other 8-head slope: 2^-1 and 2^-3
    assert masks.alibi_slopes(6) == [2.0 ** -k for k in (2, 4, 6, 8, 1, 3)]
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        masks.alibi_slopes(0)


@given(heads=st.integers(1, 5), q_len=st.integers(1, 4), extra=st.integers(0, 3))
def test_alibi_bias_is_minus_slope_times_distance_aligned_to_the_end(heads, q_len, extra):
    k_len = q_len + extra
    bias = host(masks.alibi_bias(heads, q_len, k_len))
    assert bias.shape == (1, heads, q_len, k_len) and bias.dtype == np.float32
    for h, slope in enumerate(masks.alibi_slopes(heads)):
        for i in range(q_len):
            for j in range(k_len):
                assert bias[0, h, i, j] == np.float32(-slope * abs(extra + i - j))
    np.testing.assert_array_equal(bias, host(masks.alibi_bias(heads, k_len))[..., extra:, :])
    with pytest.raises(ValueError, match="alibi_bias: q_len=5 exceeds k_len=4"):
        masks.alibi_bias(heads, 5, 4)


# T5's buckets written out from the definition (Raffel et al. 2020; the T5 code):
# bidirectional, 32 buckets, max_distance 128: 16 per direction, of which distances
# 0..7 are exact and 8..127 share 8 logarithmic buckets, 8 + floor(log(n/8) / log(16) * 8),
# capped at 15; keys after the query add 16. Causal: 32 buckets for looking back only,
# 0..15 exact, then 16 + floor(log(n/16) / log(8) * 16), capped at 31; keys after: 0.
# E.g. n = 100: 8 + floor(7.29) = 15 and 16 + floor(14.10) = 30.
T5_BUCKETS = [  # (key - query offset, bidirectional bucket, causal bucket)
    (0, 0, 0), (-1, 1, 1), (-7, 7, 7), (-8, 8, 8), (-12, 9, 12), (-15, 9, 15),
    (-16, 10, 16), (-31, 11, 21), (-32, 12, 21), (-64, 14, 26), (-100, 15, 30),
    (-127, 15, 31), (-128, 15, 31), (-5000, 15, 31),
    (1, 17, 0), (7, 23, 0), (8, 24, 0), (16, 26, 0), (64, 30, 0), (200, 31, 0)]


def test_t5_buckets_match_the_definition():
    offsets, both, causal = (np.array(column) for column in zip(*T5_BUCKETS))
    relative = mt.tensor(offsets).data
    np.testing.assert_array_equal(host(nn.relative_position_bucket(relative)), both)
    np.testing.assert_array_equal(
        host(nn.relative_position_bucket(relative, bidirectional=False)), causal)


@settings(max_examples=6)
@given(seed=seeds, q_len=st.integers(1, 4), extra=st.integers(0, 3),
       bidirectional=st.booleans())
def test_relative_position_bias_module(seed, q_len, extra, bidirectional):
    mt.manual_seed(seed)
    rel = nn.RelativePositionBias(3, num_buckets=8, max_distance=6,
                                  bidirectional=bidirectional).to(dtype=np.float64)
    k_len = q_len + extra
    bias = rel(q_len, k_len)
    assert bias.shape == (1, 3, q_len, k_len)
    relative = np.arange(k_len)[None, :] - np.arange(extra, k_len)[:, None]
    buckets = host(nn.relative_position_bucket(mt.tensor(relative).data, bidirectional,
                                               8, 6))
    np.testing.assert_array_equal(bias.numpy()[0], host(rel.weight.data)[buckets].transpose(
        2, 0, 1))
    np.testing.assert_array_equal(bias.numpy(), rel(k_len).numpy()[..., extra:, :])
    assert mt.gradcheck(lambda w: rel(q_len, k_len), [rel.weight])


def test_rms_norm_module_and_gated_feed_forwards():
    mt.manual_seed(0)
    norm = nn.RMSNorm(4).to(dtype=np.float64)
    x = leaf(np.random.default_rng(0).standard_normal((2, 3, 4)))
    np.testing.assert_allclose((norm(x).numpy() ** 2).mean(-1), 1, rtol=1e-5)
    assert mt.gradcheck(lambda x, w: norm(x), [x, norm.weight])
    for activation, act in (("swiglu", F.silu), ("geglu", F.gelu)):
        ff = nn.FeedForward(4, 5, 0.0, activation, bias=False).to(dtype=np.float64)
        assert ff.gate.bias is None and ff.linear1.bias is None
        expected = ff.linear2(act(ff.gate(x)) * ff.linear1(x))
        np.testing.assert_array_equal(ff(x).numpy(), expected.numpy())
        assert mt.gradcheck(lambda x, *_: ff(x), [x, *ff.parameters()], directions=3)
    with pytest.raises(ValueError, match="activation must be one of .*'swiglu'.* got 'glu'"):
        nn.FeedForward(4, 5, activation="glu")
    with pytest.raises(ValueError, match="RMSNorm: input has shape .* expected last dim"):
        norm(leaf(np.ones((2, 3))))


# ---- against references written independently from the papers' and libraries' code ----

def rope_reference(x, positions, base):
    """GPT-NeoX/LLaMA: x * cos + rotate_half(x) * sin, angles repeated over both halves."""
    d = x.shape[-1]
    angles = np.asarray(positions)[..., None] / base ** (np.arange(0, d, 2) / d)
    angles = np.concatenate([angles, angles], axis=-1)
    rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    return x * np.cos(angles) + rotated * np.sin(angles)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_rotary_matches_the_half_split_reference(dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 8)).astype(dtype)
    for positions, base in [(np.arange(5), 10000.0), (np.arange(4000, 4005), 10000.0),
                            (rng.integers(0, 50, (2, 1, 5)), 500000.0), (np.array([3]), 10)]:
        out = F.rotary_embedding(mt.tensor(x), positions, base)
        assert out.dtype == dtype
        np.testing.assert_allclose(out.numpy(), rope_reference(x.astype(np.float64),
                                                             positions, base), atol=tol)


def paper_alibi_slopes(n):
    """The ALiBi authors' get_slopes (ofirpress/attention_with_linear_biases)."""
    def power_of_2(n):
        start = 2 ** (-2 ** -(np.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if np.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** int(np.floor(np.log2(n)))
    return power_of_2(closest) + paper_alibi_slopes(2 * closest)[0::2][:n - closest]


@pytest.mark.parametrize("heads", [*range(1, 17), 24, 48, 100])
def test_alibi_slopes_match_the_papers_code(heads):
    np.testing.assert_allclose(masks.alibi_slopes(heads), paper_alibi_slopes(heads),
                               rtol=1e-12)


def hf_t5_bucket(relative, bidirectional, num_buckets, max_distance):
    """Hugging Face's T5Attention._relative_position_bucket, line for line in NumPy
    (float32 logarithms, as torch computes them there)."""
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0) * num_buckets
        relative = np.abs(relative)
    else:
        relative = -np.minimum(relative, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0): masked out below
        large = max_exact + (np.log(relative.astype(np.float32) / max_exact)
                             / np.log(max_distance / max_exact)
                             * (num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(relative < max_exact, relative, large)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (32, 64), (8, 20), (10, 30)])
def test_t5_buckets_match_hugging_face(bidirectional, num_buckets, max_distance):
    relative = np.arange(-1000, 1001)
    ours = nn.relative_position_bucket(mt.tensor(relative).data, bidirectional,
                                       num_buckets, max_distance)
    np.testing.assert_array_equal(host(ours), hf_t5_bucket(relative, bidirectional,
                                                           num_buckets, max_distance))


def written_out_distribution(row, temperature, top_k, top_p):
    """One row of sampling_distribution, step by step in plain Python."""
    z = [v / temperature for v in row]
    kth = sorted(z, reverse=True)[min(top_k or len(z), len(z)) - 1]
    weights = [np.exp(v - max(z)) if v >= kth else 0.0 for v in z]
    p = [w / sum(weights) for w in weights]
    if top_p is not None:
        total, last = 0.0, None
        for value in sorted(p, reverse=True):  # smallest prefix reaching top_p
            total, last = total + value, value
            if total >= top_p:
                break
        p = [v if v >= last else 0.0 for v in p]
        p = [v / sum(p) for v in p]
    return p


@settings(max_examples=30)
@given(seed=seeds, vocab=st.integers(2, 9), scale=st.sampled_from([0.1, 1.0, 5.0]),
       temperature=st.sampled_from([0.3, 1.0, 2.5]), top_k=st.sampled_from([None, 1, 2, 5]),
       top_p=st.sampled_from([None, 0.05, 0.5, 0.9, 1.0]))
def test_sampling_distribution_matches_the_written_out_one(seed, vocab, scale, temperature,
                                                           top_k, top_p):
    logits = np.random.default_rng(seed).standard_normal((3, vocab)) * scale
    probs = mt.generate.sampling_distribution(mt.tensor(logits).data, temperature, top_k,
                                              top_p)
    expected = [written_out_distribution(row, temperature, top_k, top_p) for row in logits]
    np.testing.assert_allclose(host(probs), expected, atol=1e-12)


def test_silu_is_finite_and_warning_free_at_extremes():
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    for dtype in (np.float16, np.float32, np.float64):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            out = F.silu(mt.tensor(x.astype(dtype))).numpy()
        with np.errstate(over="ignore"):  # exp(1000) = inf: x / inf = -0, the limit
            reference = x / (1 + np.exp(-x))
        np.testing.assert_allclose(out, reference, rtol=1e-3, atol=np.finfo(dtype).tiny)


def test_top_p_of_half_precision_logits_is_the_float32_nucleus():
    """A float16 cumulative sum over 5000 tokens stalls near 1: the nucleus kept almost
    every token before the logits were widened."""
    logits = (np.random.default_rng(0).standard_normal((2, 5000)) * 2).astype(np.float16)
    half, wide = (host(mt.generate.sampling_distribution(mt.tensor(a).data, top_p=0.9))
                  for a in (logits, logits.astype(np.float32)))
    np.testing.assert_array_equal(half > 0, wide > 0)
    np.testing.assert_allclose(half, wide, atol=1e-6)
