"""The fused functions of minitransformer.functional: each equals, in value and gradient,
the same function composed from primitive ops (float64, hypothesis shapes, repeated ids,
ignored targets), passes a numerical gradient check, keeps float32 as float32, and
rejects bad arguments with a clear message. Attention has its own file,
test_functional_attention.py."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from minitransformer import functional as F
from strategies import arrays, host, leaf

seeds = st.integers(0, 2**32 - 1)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def assert_same(fused, composed, inputs, seed=0, tol=1e-10):
    """``fused(*inputs)`` equals ``composed(*inputs)``, and so do the gradients of every
    input that requires grad under the same random upstream gradient."""
    grads = []
    for fn in (fused, composed):
        for x in inputs:
            x.grad = None
        out = fn(*inputs)
        upstream = np.random.default_rng(seed).standard_normal(out.shape)
        out.backward(mt.tensor(upstream))
        grads.append((out.numpy(), [host(x.grad) if x.grad is not None else None
                                    for x in inputs if x.requires_grad]))
    (out, g_fused), (expected, g_composed) = grads
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    for a, b in zip(g_fused, g_composed):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---- softmax and log-softmax ---------------------------------------------------------

def composed_log_softmax(x, axis):
    shifted = x - x.detach().max(axis=axis, keepdims=True)
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


@given(data=st.data(), shape=shapes)
def test_softmax_and_log_softmax_equal_composed(data, shape):
    x = leaf(data.draw(arrays(shape, -5, 5)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    assert_same(lambda t: F.softmax(t, axis), lambda t: composed_log_softmax(t, axis).exp(), [x])
    assert_same(lambda t: F.log_softmax(t, axis), lambda t: composed_log_softmax(t, axis), [x])
    assert mt.gradcheck(lambda t: F.softmax(t, axis), [x])
    assert mt.gradcheck(lambda t: F.log_softmax(t, axis), [x])


def test_softmax_is_stable_for_huge_logits():
    x = mt.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], requires_grad=True)
    y, logy = F.softmax(x), F.log_softmax(x)
    np.testing.assert_allclose(y.numpy(), [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-7)
    np.testing.assert_allclose(logy.numpy()[0], [0, -2e4, -1e4], rtol=1e-6)
    (y.sum() + logy.sum()).backward()
    assert np.isfinite(host(x.grad)).all()


# ---- activations ---------------------------------------------------------------------

@given(a=arrays(shapes))
def test_relu(a):
    a = np.where(np.abs(a) < 1e-3, 0.5, a)  # keep away from the kink
    x = leaf(a)
    assert_same(F.relu, lambda t: mt.maximum(t, 0.0), [x])
    assert mt.gradcheck(F.relu, [x])


def test_relu_gradient_at_zero_is_zero():
    x = leaf([0.0, 1.0])
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [0.0, 1.0])


def test_erf_float64_matches_math_erf_to_rounding():
    grid = np.concatenate([np.linspace(-7, 7, 20001), [0.46875, -0.46875, 4.0, 4.0001,
                                                       1e-300, -0.0, 30.0, -np.inf]])
    expected = np.array([math.erf(v) for v in grid])
    np.testing.assert_allclose(host(F.erf(mt.tensor(grid).data)), expected,
                               rtol=1e-15, atol=3e-16)
    assert np.isnan(host(F.erf(mt.tensor([np.nan]).data))).all()


def test_erf_float32_is_within_a_few_ulps():
    grid = np.linspace(-6, 6, 20001, dtype=np.float32)
    out = F.erf(mt.tensor(grid).data)
    assert out.dtype == np.float32
    expected = np.array([math.erf(float(v)) for v in grid])
    assert np.abs(host(out) - expected).max() < 5e-7


def phi(a):
    return np.exp(-a * a / 2) / math.sqrt(2 * math.pi)


def normal_cdf(a):
    return 0.5 * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))


@given(a=arrays(shapes, -6, 6))
def test_gelu_exact_matches_closed_form(a):
    x = leaf(a)
    out = F.gelu(x)
    np.testing.assert_allclose(out.numpy(), a * normal_cdf(a), rtol=1e-13, atol=1e-15)
    out.backward(mt.tensor(np.ones_like(a)))
    np.testing.assert_allclose(host(x.grad), normal_cdf(a) + a * phi(a), rtol=1e-13,
                               atol=1e-15)
    assert mt.gradcheck(F.gelu, [leaf(a)])


@given(a=arrays(shapes, -6, 6))
def test_gelu_tanh_equals_composed(a):
    def composed(t):
        inner = math.sqrt(2 / math.pi) * (t + 0.044715 * t * t * t)
        return 0.5 * t * (1 + inner.tanh())
    x = leaf(a)
    assert_same(lambda t: F.gelu(t, approximate="tanh"), composed, [x])
    assert mt.gradcheck(lambda t: F.gelu(t, approximate="tanh"), [x])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_in_cache_sized_pieces_equals_gelu_of_the_whole(monkeypatch, approximate):
    """Above common.PIECE elements GELU runs piece by piece (on the CPU): the very same
    numbers, forward and backward, as one evaluation of the whole array."""
    from minitransformer.functional import common
    a = np.random.default_rng(0).standard_normal((3, common.PIECE // 2 + 5), np.float32) * 3
    g = np.random.default_rng(1).standard_normal(a.shape).astype(np.float32)
    results = []
    for piece in (common.PIECE, a.size):  # pieces (last one short), then whole
        monkeypatch.setattr(common, "PIECE", piece)
        x = mt.tensor(a, requires_grad=True)  # float32: the rational erf
        out = F.gelu(x, approximate)
        out.backward(mt.tensor(g))
        results.append((out.numpy(), host(x.grad)))
    for pieces, whole in zip(*results):
        np.testing.assert_array_equal(pieces, whole)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(leaf([1.0]), approximate="erf")


@given(seed=seeds, p=st.sampled_from([0.1, 0.5, 0.9]))
def test_dropout_zeroes_and_scales_and_backpropagates_the_same_mask(seed, p):
    mt.manual_seed(seed)
    a = np.random.default_rng(seed).uniform(1, 2, (8, 16))
    x = leaf(a)
    y = F.dropout(x, p, training=True)
    kept = host(y.data) != 0
    np.testing.assert_allclose(host(y.data)[kept], a[kept] / (1 - p), rtol=1e-12)
    g = np.random.default_rng(seed + 1).standard_normal(a.shape)
    y.backward(mt.tensor(g))
    np.testing.assert_allclose(host(x.grad), np.where(kept, g / (1 - p), 0), rtol=1e-12)
    mt.manual_seed(seed)
    np.testing.assert_array_equal(F.dropout(x, p, training=True).numpy(), y.numpy())


def test_dropout_rate_is_p_and_mean_is_kept():
    mt.manual_seed(0)
    y = F.dropout(mt.tensor(np.ones((200, 500), np.float32)), 0.3, training=True)
    assert y.dtype == np.float32
    assert abs((y.numpy() == 0).mean() - 0.3) < 0.01
    assert abs(y.numpy().mean() - 1) < 0.01


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_drops_a_fraction_p_and_scales_the_rest_exactly(p):
    """Integer-threshold masks: on 10^6 elements the dropped fraction is within 5 standard
    errors (5 sqrt(p (1 - p) / n), at most 2.5e-3) of p, every kept value is exactly
    1 / (1 - p) in float32, and the mean stays 1 within 5 standard errors."""
    mt.manual_seed(0)
    n = 10 ** 6
    y = F.dropout(mt.tensor(np.ones(n, np.float32)), p, training=True).numpy()
    dropped = y == 0
    assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert (y[~dropped] == np.float32(1 / (1 - p))).all()
    assert abs(y.mean() - 1) < 5 * math.sqrt(p / (1 - p) / n)


def test_dropout_threshold_is_exact(monkeypatch):
    """An element is dropped exactly when its 32 random bits are below round(p 2^32)."""
    from minitransformer import backend
    threshold = round(0.25 * 2 ** 32)
    bits = np.array([0, threshold - 1, threshold, 2 ** 32 - 1], np.uint32)
    monkeypatch.setattr(backend, "random_bits",
                        lambda shape, device=None: mt.tensor(bits).data.reshape(shape))
    y = F.dropout(mt.tensor(np.ones(4, np.float32)), 0.25, training=True).numpy()
    np.testing.assert_array_equal(y, np.array([0, 0, 4 / 3, 4 / 3], np.float32))


def test_random_bits_are_uniform_and_replayable():
    """Each of the 32 bit positions is set half the time (within 5 standard errors), in
    odd and even elements alike (the two halves of each 64-bit draw), and rng_replay
    draws the same bits again."""
    from minitransformer import backend
    mt.manual_seed(0)
    mark = backend.rng_fork()
    bits = host(backend.random_bits((2 ** 15, 2)))
    assert bits.dtype == np.uint32
    for half in (bits[:, 0], bits[:, 1]):
        frequency = ((half[:, None] >> np.arange(32, dtype=np.uint32)) & 1).mean(axis=0)
        assert np.abs(frequency - 0.5).max() < 5 * math.sqrt(0.25 / half.size)
    with backend.rng_replay(mark):
        np.testing.assert_array_equal(host(backend.random_bits((2 ** 15, 2))), bits)


def test_dropout_is_identity_when_not_training_or_p_zero():
    x = leaf([1.0, 2.0])
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\), got"):
        F.dropout(leaf([1.0]), p, training=True)


# ---- linear, embedding, layer norm ---------------------------------------------------

@given(data=st.data(), lead=st.lists(st.integers(1, 3), max_size=3),
       n_in=st.integers(1, 4), n_out=st.integers(1, 4), bias=st.booleans(),
       x_grad=st.booleans())
def test_linear_equals_composed(data, lead, n_in, n_out, bias, x_grad):
    x = leaf(data.draw(arrays((*lead, n_in))), requires_grad=x_grad)
    w = leaf(data.draw(arrays((n_out, n_in))))
    params = [w] + ([leaf(data.draw(arrays((n_out,))))] if bias else [])
    composed = (lambda x, w, b=None: x @ w.T + (b if b is not None else 0.0))
    assert_same(F.linear, composed, [x, *params])
    assert mt.gradcheck(F.linear, [x, *params])
    if not x_grad:
        assert x.grad is None


def test_linear_errors_name_the_shapes():
    x, w = leaf(np.ones((2, 3))), leaf(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"x has shape \(2, 3\), expected last dim "
                                         r"in_features=5"):
        F.linear(x, w)
    with pytest.raises(ValueError, match=r"bias has shape \(5,\), expected \(4,\)"):
        F.linear(leaf(np.ones((2, 5))), w, leaf(np.ones(5)))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        F.linear(x, leaf(np.ones(3)))


@given(data=st.data(), vocab=st.integers(1, 6), dim=st.integers(1, 4),
       ids_shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
def test_embedding_equals_indexing_and_accumulates_repeated_ids(data, vocab, dim, ids_shape):
    ids = data.draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, vocab - 1)))
    w = leaf(data.draw(arrays((vocab, dim))))
    out = F.embedding(ids, w)
    assert out.shape == (*ids.shape, dim)
    assert_same(lambda w: F.embedding(ids, w), lambda w: w[mt.tensor(ids)], [w])
    assert mt.gradcheck(lambda w: F.embedding(mt.tensor(ids), w), [w])


def test_embedding_gradient_counts_repeats():
    w = leaf(np.zeros((4, 2)))
    F.embedding([[1, 1, 3], [1, 0, 0]], w).sum().backward()
    np.testing.assert_array_equal(host(w.grad), [[2, 2], [3, 3], [0, 0], [1, 1]])


def test_embedding_rejects_bad_ids():
    w = leaf(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"embedding: ids must lie in \[0, 5\), got 7"):
        F.embedding([[1, 7]], w)
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\), got -1"):
        F.embedding([-1], w)
    with pytest.raises(TypeError, match="embedding: ids must be integers, got dtype float"):
        F.embedding(np.array([1.0]), w)


def composed_layer_norm(x, weight, bias, eps):
    centred = x - x.mean(axis=-1, keepdims=True)
    out = centred / ((centred * centred).mean(axis=-1, keepdims=True) + eps).sqrt()
    out = out if weight is None else out * weight
    return out if bias is None else out + bias


@given(data=st.data(), lead=st.lists(st.integers(1, 3), max_size=2), dim=st.integers(2, 5),
       has_weight=st.booleans(), has_bias=st.booleans())
def test_layer_norm_equals_composed(data, lead, dim, has_weight, has_bias):
    x = leaf(data.draw(arrays((*lead, dim))) + np.arange(dim))  # keep the variance > 0
    w = leaf(data.draw(arrays((dim,)))) if has_weight else None
    b = leaf(data.draw(arrays((dim,)))) if has_bias else None
    params = [p for p in (w, b) if p is not None]

    def call(fn):
        return lambda x, *p: fn(x, w, b, 1e-5)
    assert_same(call(F.layer_norm), call(composed_layer_norm), [x, *params], tol=1e-9)
    assert mt.gradcheck(call(F.layer_norm), [x, *params])


def test_layer_norm_rejects_wrong_parameter_shape():
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(3,\), expected "
                                         r"\(4,\) for x of shape \(2, 4\)"):
        F.layer_norm(leaf(np.ones((2, 4))), leaf(np.ones(3)), None)


# ---- cross-entropy -------------------------------------------------------------------

def composed_cross_entropy(logits, targets, ignore_index, smoothing):
    classes = logits.shape[-1]
    logp = composed_log_softmax(logits.reshape(-1, classes), -1)
    t = targets.reshape(-1)
    counted = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    rows = np.arange(t.size)
    nll = -logp[mt.tensor(rows), mt.tensor(np.where(counted, t, 0))]
    per_row = (1 - smoothing) * nll - smoothing * logp.mean(axis=-1)
    return (per_row * mt.tensor(counted.astype(np.float64))).sum() / max(counted.sum(), 1)


@st.composite
def classification(draw):
    lead = draw(st.sampled_from([(draw(st.integers(1, 5)),),
                                 (draw(st.integers(1, 3)), draw(st.integers(1, 3)))]))
    classes = draw(st.integers(1, 5))
    logits = draw(arrays((*lead, classes), -5, 5))
    targets = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, classes - 1)))
    ignore_index = draw(st.none() | st.sampled_from([-100, 0]))
    if ignore_index == -100:
        ignored = draw(hnp.arrays(bool, lead))
        targets = np.where(ignored, -100, targets)
    return logits, targets, ignore_index, draw(st.sampled_from([0.0, 0.1, 0.5]))


@given(case=classification())
def test_cross_entropy_equals_composed(case):
    logits, targets, ignore_index, smoothing = case
    z = leaf(logits)

    def fused(z):
        return F.cross_entropy(z, targets, ignore_index=ignore_index,
                               label_smoothing=smoothing)
    assert_same(fused, lambda z: composed_cross_entropy(z, targets, ignore_index,
                                                        smoothing), [z])
    assert mt.gradcheck(fused, [z])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_in_cache_sized_blocks_equals_the_whole(monkeypatch, smoothing):
    """Logits are processed block by block of rows (common.row_slices, on the CPU): the very
    same loss and gradient as in one block, ignored rows (holding NaN) included."""
    from minitransformer.functional import common
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 9, 40)).astype(np.float32)
    targets = rng.integers(0, 40, (5, 9))
    targets[0, :3] = 7
    a[0, :3] = np.nan  # ignored rows must not matter
    results = []
    for piece in (130, a.size):  # blocks of 3 rows (the last one short), then one block
        monkeypatch.setattr(common, "PIECE", piece)
        x = mt.tensor(a, requires_grad=True)
        loss = F.cross_entropy(x, targets, ignore_index=7, label_smoothing=smoothing)
        loss.backward()
        results.append((loss.numpy(), host(x.grad)))
    for blocks, whole in zip(*results):
        np.testing.assert_array_equal(blocks, whole)
    assert np.isfinite(results[0][0])


def test_cross_entropy_all_ignored_is_zero_with_zero_gradient():
    z = leaf(np.random.default_rng(0).standard_normal((2, 3, 4)))
    loss = F.cross_entropy(z, np.full((2, 3), -100), ignore_index=-100, label_smoothing=0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert (host(z.grad) == 0).all()


def test_cross_entropy_is_finite_for_huge_logits():
    z = mt.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    loss = F.cross_entropy(z, [1, 0], label_smoothing=0.1)
    assert np.isfinite(loss.item())
    loss.backward()
    assert np.isfinite(host(z.grad)).all()


def test_cross_entropy_errors():
    z = leaf(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"cross_entropy: targets must lie in \[0, 3\), "
                                         r"got 3"):
        F.cross_entropy(z, [0, 3])
    with pytest.raises(ValueError, match=r"targets have shape \(3,\), expected \(2,\)"):
        F.cross_entropy(z, [0, 1, 2])
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 2"):
        F.cross_entropy(z, [0, 1], label_smoothing=2)
    with pytest.raises(ValueError, match=r"logits must be \(N, C\) or \(B, L, C\)"):
        F.cross_entropy(leaf(np.zeros(3)), [0])


@st.composite
def soft_targets(draw, lead, classes):
    """Probability rows (lead..., classes): normalised non-negative draws, some zeros."""
    weights = draw(arrays((*lead, classes), 0, 1))
    weights[..., 0] += 1e-3  # no all-zero row
    return weights / weights.sum(axis=-1, keepdims=True)


@given(data=st.data(), lead=hnp.array_shapes(min_dims=1, max_dims=2, max_side=3),
       classes=st.integers(1, 5), smoothing=st.sampled_from([0.0, 0.2]),
       mass=st.sampled_from([1.0, 0.6]))
def test_cross_entropy_with_probability_targets_equals_composed(data, lead, classes,
                                                                 smoothing, mass):
    # mass 0.6: rows that do not sum to 1 (a truncated teacher) still get -sum y log p
    # and its true gradient
    z, y = leaf(data.draw(arrays((*lead, classes), -5, 5))), data.draw(
        soft_targets(lead, classes)) * mass

    def fused(z):
        return F.cross_entropy(z, y, label_smoothing=smoothing)

    def composed(z):
        smoothed = mt.tensor((1 - smoothing) * y + smoothing / classes)
        log_p = composed_log_softmax(z, -1)
        return -(smoothed * log_p).sum() / (z.size // classes)
    assert_same(fused, composed, [z])
    assert mt.gradcheck(fused, [z])


def test_cross_entropy_with_one_hot_targets_equals_class_ids():
    z = leaf(np.random.default_rng(1).standard_normal((2, 3, 4)))
    ids = np.array([[0, 3, 1], [2, 2, 0]])
    hard = F.cross_entropy(z, ids, label_smoothing=0.1).item()
    soft = F.cross_entropy(z, np.eye(4)[ids], label_smoothing=0.1).item()
    assert hard == pytest.approx(soft, rel=1e-12)


def composed_distillation(student, teacher, temperature):
    log_q = composed_log_softmax(student / temperature, -1)
    log_p = composed_log_softmax(teacher / temperature, -1)
    rows = student.size // student.shape[-1]
    return temperature ** 2 * (log_p.exp() * (log_p - log_q)).sum() / rows


@given(data=st.data(), lead=hnp.array_shapes(min_dims=1, max_dims=2, max_side=3),
       classes=st.integers(1, 5), temperature=st.sampled_from([0.5, 1.0, 4.0]),
       teacher_grad=st.booleans())
def test_distillation_loss_equals_composed(data, lead, classes, temperature, teacher_grad):
    s = leaf(data.draw(arrays((*lead, classes), -5, 5)))
    t = leaf(data.draw(arrays((*lead, classes), -5, 5)), requires_grad=teacher_grad)
    assert_same(lambda s, t: F.distillation_loss(s, t, temperature),
                lambda s, t: composed_distillation(s, t, temperature), [s, t])
    assert mt.gradcheck(lambda s, t: F.distillation_loss(s, t, temperature), [s, t])


def test_distillation_loss_is_zero_for_equal_logits_and_positive_otherwise():
    a = np.random.default_rng(2).standard_normal((3, 5))
    assert F.distillation_loss(leaf(a), leaf(a), 2.0).item() == pytest.approx(0, abs=1e-15)
    assert F.distillation_loss(leaf(a), leaf(a[::-1].copy()), 2.0).item() > 0


def test_distillation_student_gradient_stays_put_as_the_temperature_grows():
    # Hinton et al.: with the T² factor, the gradient tends to (s - t) / (C N) for large T.
    # Centred logits, since a softmax ignores each row's mean.
    rng = np.random.default_rng(3)
    s, t = (x - x.mean(axis=1, keepdims=True) for x in rng.standard_normal((2, 4, 6)))
    student = leaf(s)
    F.distillation_loss(student, leaf(t, requires_grad=False), 1000.0).backward()
    np.testing.assert_allclose(host(student.grad), (s - t) / (6 * 4), rtol=0, atol=2e-4)


def test_soft_targets_and_distillation_sum_float16_logits_in_float32():
    rng = np.random.default_rng(4)
    z, t = rng.standard_normal((2, 3, 50)) * 8, rng.standard_normal((2, 3, 50)) * 8
    y = np.exp(t) / np.exp(t).sum(axis=-1, keepdims=True)
    for loss in (lambda a, b: F.cross_entropy(a, y), lambda a, b: F.distillation_loss(a, b, 2)):
        half = loss(mt.tensor(z.astype(np.float16), requires_grad=True),
                    mt.tensor(t.astype(np.float16)))
        assert half.dtype == np.float32
        assert half.item() == pytest.approx(loss(leaf(z), leaf(t)).item(), rel=2e-3)


def test_soft_target_and_distillation_errors():
    z = leaf(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"probability targets .* must have the logits' "
                                         r"shape \(2, 3\) and no ignore_index; got shape "
                                         r"\(2,\)"):
        F.cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="ignore_index=-100"):
        F.cross_entropy(z, np.full((2, 3), 1 / 3), ignore_index=-100)
    with pytest.raises(ValueError, match=r"distillation_loss: student and teacher logits "
                                         r"must have one shape .* got \(2, 3\) and \(2, 4\)"):
        F.distillation_loss(z, leaf(np.zeros((2, 4))))
    with pytest.raises(ValueError, match="temperature must be positive, got 0"):
        F.distillation_loss(z, z, 0)


# ---- across all functions ------------------------------------------------------------

def float32_calls():
    rng = np.random.default_rng(0)

    def t(*shape):
        return mt.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    x, w, b, d = t(2, 3, 4), t(5, 4), t(5), t(4)
    return {
        "softmax": (F.softmax, [x]), "log_softmax": (F.log_softmax, [x]),
        "relu": (F.relu, [x]), "gelu": (F.gelu, [x]),
        "gelu_tanh": (lambda x: F.gelu(x, "tanh"), [x]),
        "dropout": (lambda x: F.dropout(x, 0.5, True), [x]),
        "linear": (F.linear, [x, w, b]), "embedding": (lambda w: F.embedding([[1, 2]], w), [w]),
        "layer_norm": (lambda x, d: F.layer_norm(x, d, d), [x, d]),
        "rms_norm": (F.rms_norm, [x, d]), "silu": (F.silu, [x]),
        "rotary": (lambda x: F.rotary_embedding(x, [0, 5, 9]), [x]),
        "attention_bias": (lambda x, bias: F.scaled_dot_product_attention(
            x, x, x, bias=bias)[0], [x, t(3, 3)]),
        "attention": (lambda x: F.scaled_dot_product_attention(
            x, x, x, mask=np.tri(3, dtype=bool), dropout_p=0.2)[0], [x]),
        "cross_entropy": (lambda x: F.cross_entropy(x, np.zeros((2, 3), int), 1, 0.1), [x]),
        "soft_cross_entropy": (lambda x: F.cross_entropy(x, np.full((2, 3, 4), 0.25)), [x]),
        "distillation": (lambda x, y: F.distillation_loss(x, y, 2.0), [x, t(2, 3, 4)]),
    }


@pytest.mark.parametrize("name", sorted(float32_calls()))
def test_float32_stays_float32(name):
    fn, inputs = float32_calls()[name]
    out = fn(*inputs)
    assert out.dtype == np.float32
    out.backward(mt.tensor(np.ones(out.shape, np.float32)))
    assert all(t.grad.dtype == np.float32 for t in inputs)


@pytest.mark.parametrize("name", sorted(float32_calls()))
def test_inputs_are_not_modified(name):
    fn, inputs = float32_calls()[name]
    before = [t.numpy() for t in inputs]
    out = fn(*inputs)
    out.backward(mt.tensor(np.ones(out.shape, np.float32)))
    for t, b in zip(inputs, before):
        np.testing.assert_array_equal(t.numpy(), b)
