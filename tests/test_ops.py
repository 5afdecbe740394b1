"""Every primitive op: forward against NumPy, backward against central differences
(hypothesis shapes, with broadcasting) and, where one exists, a closed-form gradient."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from strategies import arrays, broadcastable_pair, host, leaf, small_shapes

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "maximum": (mt.maximum, np.maximum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(pair=broadcastable_pair())
def test_binary_broadcast(name, pair):
    op, reference = BINARY[name]
    a, b = pair
    if name == "maximum":
        assume(np.abs(np.subtract(a, b)).min(initial=1) > 1e-3)  # kinks are not differentiable
    x, y = leaf(a), leaf(b)
    np.testing.assert_allclose(op(x, y).numpy(), reference(a, b))
    assert mt.gradcheck(op, [x, y])


@given(pair=broadcastable_pair())
def test_div_broadcast(pair):
    a, b = pair
    b = np.where(np.abs(b) < 0.5, 1.5, b)
    assert mt.gradcheck(lambda x, y: x / y, [leaf(a), leaf(b)])


@given(pair=broadcastable_pair(lo=0.5, hi=2.0))
def test_pow_both_operands(pair):
    a, b = pair
    x, y = leaf(a), leaf(b)
    np.testing.assert_allclose((x ** y).numpy(), a ** b)
    assert mt.gradcheck(lambda x, y: x ** y, [x, y])


UNARY = {
    "neg": (lambda x: -x, lambda a: -np.ones_like(a), (-3, 3)),
    "exp": (mt.exp, np.exp, (-3, 3)),
    "log": (mt.log, lambda a: 1 / a, (0.1, 5)),
    "sqrt": (mt.sqrt, lambda a: 0.5 / np.sqrt(a), (0.1, 5)),
    "tanh": (mt.tanh, lambda a: 1 - np.tanh(a) ** 2, (-3, 3)),
    "square": (lambda x: x ** 2, lambda a: 2 * a, (-3, 3)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data(), shape=small_shapes)
def test_unary_matches_closed_form(name, data, shape):
    op, derivative, (lo, hi) = UNARY[name]
    a = data.draw(arrays(shape, lo, hi))
    x = leaf(a)
    assert mt.gradcheck(op, [x])
    x.grad = None
    op(x).sum().backward()
    np.testing.assert_allclose(host(x.grad), derivative(a), rtol=1e-10)


@given(a=arrays(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)))
def test_relu(a):
    assume(np.abs(a).min() > 1e-3)
    x = leaf(a)
    np.testing.assert_array_equal(mt.relu(x).numpy(), np.maximum(a, 0))
    assert mt.gradcheck(mt.relu, [x])


@st.composite
def array_and_axis(draw, min_dims=1):
    a = draw(arrays(hnp.array_shapes(min_dims=min_dims, max_dims=3, max_side=4)))
    axis = draw(st.none() | st.integers(-a.ndim, a.ndim - 1) |
                st.lists(st.integers(0, a.ndim - 1), min_size=1, unique=True).map(tuple))
    return a, axis


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@given(case=array_and_axis(), keepdims=st.booleans())
def test_reductions(name, case, keepdims):
    a, axis = case
    if name == "max":  # make the maximum unique so the function is differentiable
        a = a + np.arange(a.size).reshape(a.shape) * 1e-2
    x = leaf(a)
    out = getattr(x, name)(axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.numpy(), getattr(np, name)(a, axis=axis, keepdims=keepdims))
    assert mt.gradcheck(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), [x])


def test_max_splits_gradient_between_ties():
    x = leaf([1.0, 3.0, 3.0])
    x.max().backward()
    np.testing.assert_allclose(host(x.grad), [0, 0.5, 0.5])


def test_maximum_splits_gradient_between_ties():
    # Documented: at a tie each input gets half, so maximum(a, a) has gradient 1 like a.
    # Central differences cannot see this rule (the kink is not differentiable).
    a, b = leaf([1.0, 2.0, 5.0]), leaf([1.0, 3.0, 4.0])
    (mt.maximum(a, b) * leaf([2.0, 3.0, 7.0])).sum().backward()
    np.testing.assert_array_equal(host(a.grad), [1.0, 0.0, 7.0])
    np.testing.assert_array_equal(host(b.grad), [1.0, 3.0, 0.0])
    x = leaf([0.5, -2.0])
    mt.maximum(x, x).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [1.0, 1.0])


@given(a=arrays(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4)), data=st.data())
def test_reshape_and_transpose(a, data):
    perm = data.draw(st.permutations(range(a.ndim)))
    x = leaf(a)
    np.testing.assert_array_equal(x.transpose(perm).numpy(), a.transpose(perm))
    assert mt.gradcheck(lambda t: t.transpose(perm), [x])
    assert mt.gradcheck(lambda t: t.reshape(-1), [x])
    assert mt.gradcheck(lambda t: t.swapaxes(0, -1), [x])


@given(a=arrays(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4)), data=st.data())
def test_permute_as_in_pytorch(a, data):
    """``x.permute(*dims)`` (PyTorch's name, for ported code) is ``transpose``: dims as
    separate ints or one tuple, negative ones counted from the end."""
    perm = data.draw(st.permutations(range(a.ndim)))
    x = leaf(a)
    np.testing.assert_array_equal(x.permute(*perm).numpy(), a.transpose(perm))
    np.testing.assert_array_equal(x.permute([p - a.ndim for p in perm]).numpy(),
                                  a.transpose(perm))
    assert mt.gradcheck(lambda t: t.permute(*perm), [x])
    if a.ndim > 1:
        with pytest.raises(ValueError, match="not a permutation"):
            x.permute(*([0] * a.ndim))
    with pytest.raises(ValueError, match=f"axis {a.ndim}"):
        x.permute(*range(1, a.ndim + 1))


def test_requires_grad_switches_gradients_on_and_off():
    x = mt.tensor([1.0, -2.0], dtype=np.float64)
    assert x.requires_grad_() is x and x.requires_grad
    (x * 3).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [3.0, 3.0])
    x.requires_grad_(False)  # frozen, as when fine-tuning only some layers
    y = x * 3
    assert not y.requires_grad and y._ctx is None


@given(a=arrays(hnp.array_shapes(min_dims=2, max_dims=3, max_side=4)), data=st.data())
def test_getitem_fancy_index_accumulates(a, data):
    rows = np.array(data.draw(st.lists(st.integers(0, a.shape[0] - 1), min_size=1,
                                       max_size=6)))
    x = leaf(a)
    np.testing.assert_array_equal(x[rows].numpy(), a[rows])
    assert mt.gradcheck(lambda t: t[rows], [x])
    assert mt.gradcheck(lambda t: t[1:, ..., :1], [x])
    x.grad = None
    x[rows].sum().backward()
    expected = np.zeros_like(a)
    np.add.at(expected, rows, 1.0)
    np.testing.assert_array_equal(host(x.grad), expected)


@given(data=st.data(), n=st.integers(1, 3))
def test_concatenate_and_stack(data, n):
    base = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    axis = data.draw(st.integers(0, len(base) - 1))
    parts = []
    for _ in range(n):
        shape = list(base)
        shape[axis] = data.draw(st.integers(1, 3))
        parts.append(leaf(data.draw(arrays(tuple(shape)))))
    np.testing.assert_array_equal(mt.concatenate(parts, axis).numpy(),
                                  np.concatenate([p.numpy() for p in parts], axis))
    assert mt.gradcheck(lambda *ps: mt.concatenate(ps, axis=axis), parts)
    same = [leaf(data.draw(arrays(base))) for _ in range(n)]
    assert mt.gradcheck(lambda *ps: mt.stack(ps, axis=-1), same)


@st.composite
def matmul_operands(draw):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2,
                                                               max_side=3)).input_shapes
    a_shape = draw(st.sampled_from([(k,), batch_a + (n, k)]))
    b_shape = draw(st.sampled_from([(k,), batch_b + (k, m)]))
    return draw(arrays(a_shape)), draw(arrays(b_shape))


@given(ops=matmul_operands())
def test_matmul_batched_broadcast_and_vectors(ops):
    a, b = ops
    x, y = leaf(a), leaf(b)
    np.testing.assert_allclose((x @ y).numpy(), a @ b, rtol=1e-12, atol=1e-12)
    assert mt.gradcheck(lambda p, q: p @ q, [x, y])


@given(a=arrays((3, 4)), b=arrays((4, 2)))
def test_matmul_closed_form(a, b):
    x, y = leaf(a), leaf(b)
    g = np.random.default_rng(0).standard_normal((3, 2))
    (x @ y).backward(mt.tensor(g))
    np.testing.assert_allclose(host(x.grad), g @ b.T, rtol=1e-12)
    np.testing.assert_allclose(host(y.grad), a.T @ g, rtol=1e-12)


@given(pair=broadcastable_pair(), data=st.data())
def test_where_and_masked_fill(pair, data):
    a, b = pair
    shape = np.broadcast_shapes(a.shape, b.shape)
    cond = data.draw(hnp.arrays(bool, shape))
    x, y = leaf(a), leaf(b)
    condition = mt.tensor(cond)
    np.testing.assert_array_equal(mt.where(condition, x, y).numpy(), np.where(cond, a, b))
    assert mt.gradcheck(lambda p, q: mt.where(condition, p, q), [x, y])
    assert mt.gradcheck(lambda p: p.masked_fill(mt.tensor(cond), -5.0), [leaf(np.broadcast_to(a, shape))])


def test_where_rejects_non_boolean_condition():
    with pytest.raises(TypeError, match="condition must be a boolean"):
        mt.where(mt.tensor([1.0, 0.0]), mt.tensor([1.0, 2.0]), 0.0)


@given(pair=broadcastable_pair())
def test_ops_do_not_mutate_inputs(pair):
    a, b = pair
    x, y = leaf(a), leaf(b)
    ((x * y + x / (1 + y * y)).exp().sum() + (x @ x.T if x.ndim == 2 else x).sum()).backward()
    np.testing.assert_array_equal(x.numpy(), a)
    np.testing.assert_array_equal(y.numpy(), b)


def test_python_scalars_keep_float32():
    x = mt.tensor([1.0, 2.0])
    assert x.dtype == np.float32
    for y in (x * 2.5, 2.5 * x, x + 1, 1 - x, x / 3, 3 / x, x ** 2, 2 ** x):
        assert y.dtype == np.float32


def test_out_of_range_index_arrays_are_refused_on_every_backend():
    """NumPy raises for them, CuPy would silently wrap around: getitem checks itself."""
    x = leaf(np.arange(6.0).reshape(2, 3))
    for index in (np.array([0, 2]), ([1], np.array([-4])), (Ellipsis, [3]),
                  (None, 0, mt.tensor([3]))):
        with pytest.raises(IndexError, match="out of range for axis"):
            x[index]
    np.testing.assert_array_equal(host(x[np.array([1, -2])].data), [[3, 4, 5], [0, 1, 2]])
    np.testing.assert_array_equal(host(x[..., [2]].data), [[2], [5]])


def test_numpy_array_operand(backend):
    if backend != "numpy":
        pytest.skip("a host array next to a GPU tensor is an error, tested in test_autograd")
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = x * np.array([3.0, 4.0], dtype=np.float32)
    y.sum().backward()
    np.testing.assert_array_equal(host(x.grad), [3.0, 4.0])


@given(pair=broadcastable_pair(lo=0.5, hi=2.0))
def test_binary_ops_with_one_constant_operand(pair):
    a, b = pair
    for op in (lambda x, y: x * y, lambda x, y: x / y, lambda x, y: x ** y):
        assert mt.gradcheck(op, [leaf(a), leaf(b, requires_grad=False)])
        assert mt.gradcheck(op, [leaf(a, requires_grad=False), leaf(b)])
