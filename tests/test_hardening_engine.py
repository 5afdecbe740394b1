"""Hardening of the engine (issue 10): nothing silently wrong, every bad input a clear
error. Each test failed on the code before the fix; ``arguments.py`` and the checks in
``autograd.py`` guard each class at one shared place."""
import threading

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer import nn
from minitransformer.optim import SGD
from strategies import host, leaf


# ---- tensor(): one copying rule, only numbers --------------------------------------

@pytest.mark.parametrize("dtype", [None, np.float32, np.float64])
def test_tensor_never_shares_memory_with_its_data(dtype):
    a = np.ones(3, np.float32)
    p = mt.tensor(a, dtype=dtype, requires_grad=True)
    (p * p).sum().backward()
    SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(a, np.ones(3))  # the caller's array is untouched
    np.testing.assert_allclose(host(p.data), 0.0)


@pytest.mark.parametrize("data, message", [([1.0, None], "None"), ([[1, 2], [3]], "equal lengths"),
                                           (["a", "b"], "only numbers")])
def test_tensor_refuses_what_is_not_numbers(data, message):
    with pytest.raises(TypeError, match=f"tensor: .*{message}"):
        mt.tensor(data)


@pytest.mark.parametrize("make", [lambda: mt.tensor([1, 2]).requires_grad_(),
                                  lambda: mt.tensor(np.ones(2, complex), requires_grad=True),
                                  lambda: mt.tensor(np.ones(2, complex)).requires_grad_(),
                                  lambda: nn.Parameter(mt.tensor([1, 2]).data)])
def test_requires_grad_needs_a_real_floating_dtype(make):
    with pytest.raises(TypeError, match="requires_grad needs a real floating dtype"):
        make()


def test_grad_has_the_dtype_of_its_tensor():
    x = mt.tensor([1.0, 2.0], requires_grad=True)  # float32
    (x * mt.tensor(np.array([3.0, 4.0]))).sum().backward()  # times a float64 tensor
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(host(x.grad), [3.0, 4.0])


# ---- in-place changes between forward and backward -------------------------------

@pytest.mark.parametrize("change", [lambda x: x.data.__setitem__(0, 10.0),   # x.data[0] = 10
                                    lambda x: setattr(x, "data", x.data.__imul__(2)),  # *= 2
                                    lambda x: SGD([x], lr=1.0).step()])
def test_backward_refuses_a_leaf_changed_in_place(change):
    x = leaf([1.0, 2.0, 3.0])
    x.grad = x.xp.ones(3)
    y = (x * x).sum()
    change(x)
    with pytest.raises(RuntimeError, match=r"input 0 .*of Mul was modified in place"):
        y.backward()


def test_backward_refuses_an_intermediate_changed_in_place():
    x = leaf([1.0, 2.0])
    h = x.exp()
    y = (h * 3).sum()
    h.data += 1
    with pytest.raises(RuntimeError, match="of Mul was modified in place"):
        y.backward()
    z = x.exp()
    w = z.sum()
    z.data *= 2  # Exp's backward reuses its output
    with pytest.raises(RuntimeError, match=r"output .*of Exp was modified in place"):
        w.backward()


def test_assigning_a_new_array_keeps_the_graph_valid():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    x.data = x.data * 10  # a new array: the graph still holds the old values
    y.backward()
    np.testing.assert_allclose(host(x.grad), [2.0, 4.0])


# ---- no_grad is per thread ---------------------------------------------------------

def test_no_grad_in_one_thread_leaves_the_others_recording():
    inside, leave = threading.Event(), threading.Event()

    def worker():
        with mt.no_grad():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert inside.wait(10)
        assert mt.is_grad_enabled()
        assert (leaf([1.0]) * 2).requires_grad
    finally:
        leave.set()
        thread.join()


def test_interleaved_no_grad_blocks_restore_recording():
    steps = [threading.Event() for _ in range(3)]

    def first():  # enters, waits for the second to enter, leaves first
        with mt.no_grad():
            steps[0].set()
            steps[1].wait(10)
        steps[2].set()

    def second():
        steps[0].wait(10)
        with mt.no_grad():
            steps[1].set()
            steps[2].wait(10)

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mt.is_grad_enabled()


# ---- numbers that must never be NaN ---------------------------------------------------

@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_ignored_rows_never_touch_cross_entropy(bad):
    logits = leaf([[bad, 0.0, 1.0], [1.0, 2.0, 0.5]])
    loss = F.cross_entropy(logits, [-100, 1], ignore_index=-100)
    loss.backward()
    expected = F.cross_entropy(leaf([[1.0, 2.0, 0.5]]), [1])
    np.testing.assert_allclose(loss.item(), expected.item())
    assert np.isfinite(host(logits.grad)).all()
    np.testing.assert_array_equal(host(logits.grad)[0], 0.0)


def test_float16_layer_norm_computes_its_statistics_in_float32():
    x = mt.tensor(np.full((2, 4), 3.0, np.float16), requires_grad=True)
    norm = nn.LayerNorm(4, eps=1e-12).to(dtype=np.float16)
    out = norm(x)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(host(out.data), 0.0)  # a constant row: NaN before
    out.sum().backward()
    assert x.grad.dtype == np.float16 and np.isfinite(host(x.grad)).all()
    data = np.random.default_rng(0).standard_normal((3, 8))
    half = F.layer_norm(mt.tensor(data, dtype=np.float16), None, None)
    full = F.layer_norm(mt.tensor(data, dtype=np.float32), None, None)
    np.testing.assert_allclose(host(half.data), host(full.data), atol=4e-3)


# ---- gradients that disagreed with PyTorch -------------------------------------------

def test_gradient_of_x_to_the_zero_is_zero_at_zero():
    x = leaf([0.0, 2.0])
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [0.0, 0.0])
    y = leaf([0.0, 2.0])
    (y ** leaf([0.0, 2.0], requires_grad=False)).sum().backward()
    np.testing.assert_array_equal(host(y.grad), [0.0, 4.0])


def test_softmax_of_a_0d_tensor_is_one():
    x = leaf(2.0)
    y = F.softmax(x)
    y.backward()
    assert y.item() == 1.0 and host(x.grad) == 0.0
    assert F.log_softmax(leaf(2.0)).item() == 0.0


@pytest.mark.parametrize("relu", [mt.relu, lambda t: t.relu(), F.relu])
def test_one_relu_with_pytorchs_gradient_at_zero(relu):
    x = leaf([-1.0, 0.0, 2.0])
    relu(x).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [0.0, 0.0, 1.0])


def test_axes_follow_numpy_on_0d_and_are_checked_once():
    scalar = mt.tensor(5.0)
    for axis in (0, -1):  # NumPy and PyTorch accept these on a 0-d array
        assert scalar.sum(axis=axis).item() == 5.0
        assert scalar.max(axis=axis).item() == 5.0
    for axis in (1, -2):
        with pytest.raises(ValueError, match=f"sum: axis {axis} is out of range for a tensor "
                                             r"with 0 dims; expected an axis in \[-1, 0\]"):
            scalar.sum(axis=axis)
    x = mt.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="repeats an axis"):
        x.sum(axis=(1, -1))
    with pytest.raises(TypeError, match="axis must be an integer"):
        x.mean(axis=1.0)
    for call in (lambda: F.softmax(x, axis=2), lambda: x.transpose(0, 2),
                 lambda: x.swapaxes(0, -3)):
        with pytest.raises(ValueError, match="is out of range for a tensor with 2 dims"):
            call()


def test_max_gradient_goes_to_the_nan_like_pytorch():
    x = leaf([1.0, np.nan, 2.0])
    x.max().backward()
    np.testing.assert_array_equal(host(x.grad), [0.0, 1.0, 0.0])
    rows = leaf([[1.0, np.nan], [3.0, 2.0]])
    rows.max(axis=1).sum().backward()
    np.testing.assert_array_equal(host(rows.grad), [[0.0, 1.0], [1.0, 0.0]])


def test_max_gradient_with_nan_matches_torch():
    torch = pytest.importorskip("torch")
    data = np.array([[1.0, np.nan, np.nan], [3.0, 2.0, 3.0]])
    x = leaf(data)
    x.max().backward()
    t = torch.tensor(data, requires_grad=True)
    t.max().backward()
    np.testing.assert_array_equal(host(x.grad), t.grad.numpy())


# ---- Tensor behaves like an array --------------------------------------------------

def test_a_0d_tensor_has_no_length_and_no_rows():
    scalar = mt.tensor(1.0)
    with pytest.raises(TypeError, match="0-d tensor"):
        len(scalar)
    with pytest.raises(TypeError, match="0-d tensor"):
        list(scalar)
    rows = list(mt.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert len(rows) == 2 and rows[1].shape == (2,) and rows[1][0].item() == 3.0


def test_truth_value_and_comparisons_are_elementwise():
    assert not bool(mt.tensor([0.0]))  # was True: the length, not the value
    assert bool(mt.tensor(2.0))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(mt.tensor([1.0, 2.0]))
    a, b = mt.tensor([1.0, 2.0, 3.0]), mt.tensor([1.0, 5.0, 0.0])
    np.testing.assert_array_equal(host((a == b).data), [True, False, False])
    np.testing.assert_array_equal(host((a != 1.0).data), [False, True, True])
    np.testing.assert_array_equal(host((a < b).data), [False, True, False])
    np.testing.assert_array_equal(host((a >= b).data), [True, False, True])
    assert len({a, b, a}) == 2  # still hashable, by identity


# ---- cryptic errors at public entry points -------------------------------------------

def test_matmul_names_both_operand_shapes():
    a, b = mt.tensor(np.ones((3, 4))), mt.tensor(np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) @ \(5, 2\) do not match"):
        a @ b
    with pytest.raises(ValueError, match=r"batch dims \(2,\) and \(3,\) do not broadcast"):
        mt.tensor(np.ones((2, 1, 4))) @ mt.tensor(np.ones((3, 4, 1)))


@pytest.mark.parametrize("call", [lambda x: F.softmax(x), lambda x: F.log_softmax(x),
                                  lambda x: F.cross_entropy(x, [0, 1]),
                                  lambda x: F.layer_norm(x, None, None), lambda x: F.gelu(x)])
def test_float_functions_refuse_integer_tensors(call):
    with pytest.raises(TypeError, match="must be a floating tensor, got dtype int"):
        call(mt.tensor([[1, 2], [3, 4]]))


def test_attention_over_zero_keys_is_a_clear_error():
    q = mt.tensor(np.ones((1, 2, 4)))
    empty = mt.tensor(np.ones((1, 0, 4)))
    with pytest.raises(ValueError, match="k has 0 positions"):
        F.scaled_dot_product_attention(q, empty, empty)
