"""The engine itself: graph traversal, accumulation, freeing, no_grad, devices."""
import gc
import pathlib
import re
import sys
import types
import weakref

import numpy as np
import pytest
from hypothesis import given

import minitransformer as mt
from strategies import arrays, host, leaf, small_shapes


def test_long_chain_does_not_recurse():
    x = mt.tensor(1.0, requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    assert sys.getrecursionlimit() < 10_000
    y.backward()
    np.testing.assert_allclose(host(x.grad), 1.0001 ** 10_000, rtol=1e-9)


def test_shared_node_accumulates():
    x = leaf([1.0, 2.0, 3.0])
    y = x * x          # x used twice in one op
    z = y + y * x      # y used twice, x a third time
    z.sum().backward()
    a = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(host(x.grad), 2 * a + 3 * a ** 2)


def test_grad_accumulates_across_backward_calls():
    x = leaf([1.0, -2.0])
    (x * 3).sum().backward()
    (x * 4).sum().backward()
    np.testing.assert_allclose(host(x.grad), [7.0, 7.0])


def test_leaf_grads_are_independent_arrays():
    a, b = leaf([1.0]), leaf([2.0])
    (a + b).sum().backward()
    a.grad *= 10  # an optimizer scaling one gradient in place must not touch the other
    np.testing.assert_allclose(host(b.grad), [1.0])


def test_graph_is_freed_without_gc():
    gc.disable()
    try:
        x = leaf(np.ones(3))
        y = (x * 2).exp()
        probe = weakref.ref(y._ctx)
        loss = y.sum()
        loss.backward()
        del y, loss
        assert probe() is None, "graph kept alive after backward"
        y = (x * 2).exp()
        probe = weakref.ref(y._ctx)
        del y
        assert probe() is None, "graph kept alive by a reference cycle"
    finally:
        gc.enable()


def test_second_backward_through_freed_graph_is_an_error():
    x = leaf([1.0])
    y = (x * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="already used"):
        y.backward()


def test_no_grad_records_nothing():
    x = leaf([1.0])
    with mt.no_grad():
        y = x * 2
    assert not y.requires_grad and y._ctx is None
    assert mt.is_grad_enabled()


def test_detach_item_numpy():
    x = leaf([[1.5]])
    d = (x * 2).detach()
    assert not d.requires_grad and d._ctx is None
    assert d.item() == 3.0
    arr = x.numpy()
    assert isinstance(arr, np.ndarray)
    arr[0, 0] = 99  # a copy: the tensor is untouched
    assert x.item() == 1.5


class SquareAndCube(mt.Function):
    """(a^2, a^3): a two-output op; backward counts its calls and the None it receives."""
    calls = []

    def forward(self, a):
        self.a = a
        return a * a, a * a * a

    def backward(self, grad_square, grad_cube):
        SquareAndCube.calls.append((grad_square is None, grad_cube is None))
        grad = self.xp.zeros_like(self.a)
        if grad_square is not None:
            grad += 2 * self.a * grad_square
        if grad_cube is not None:
            grad += 3 * self.a ** 2 * grad_cube
        return grad


@given(x=small_shapes.flatmap(lambda shape: arrays(shape, -1.5, 1.5)))
def test_both_outputs_of_a_function_feed_the_loss(x):
    def fn(x):
        square, cube = SquareAndCube.apply(x)
        return square * 0.5 + (cube * square).tanh() + cube
    assert mt.gradcheck(fn, [leaf(x)])


def test_a_multi_output_backward_runs_once_after_all_its_outputs():
    """The cube reaches the loss through a long chain, the square directly: backward
    must wait for both gradients, whichever output the graph search meets first."""
    for long_first in (True, False):
        x = leaf([0.5, -2.0])
        square, cube = SquareAndCube.apply(x)
        chain = cube
        for _ in range(5):
            chain = chain * 1.0
        SquareAndCube.calls = []
        (chain.sum() + square.sum() if long_first else square.sum() + chain.sum()).backward()
        assert SquareAndCube.calls == [(False, False)]
        np.testing.assert_allclose(host(x.grad), 2 * host(x.data) + 3 * host(x.data) ** 2)


def test_an_output_without_gradient_gets_none():
    x = leaf([0.5, -2.0])
    square, cube = SquareAndCube.apply(x)
    del square  # freed: it can get no gradient
    SquareAndCube.calls = []
    cube.sum().backward()
    assert SquareAndCube.calls == [(True, False)]
    np.testing.assert_allclose(host(x.grad), 3 * host(x.data) ** 2)


def test_multi_output_graph_no_grad_in_place_and_freeing():
    x = leaf([0.5, -2.0])
    with mt.no_grad():
        outputs = SquareAndCube.apply(x)
    assert isinstance(outputs, tuple) and not any(t.requires_grad for t in outputs)
    square, cube = SquareAndCube.apply(x)
    cube.data *= 2  # the output the loss does not use changed: still refused
    with pytest.raises(RuntimeError, match=r"output 1 .*of SquareAndCube was modified"):
        square.sum().backward()
    gc.disable()
    try:
        square, cube = SquareAndCube.apply(x)
        probe = weakref.ref(square._ctx)
        loss = (square + cube).sum()
        loss.backward()
        del square, cube, loss
        assert probe() is None, "graph kept alive after backward"
    finally:
        gc.enable()


def test_tensor_dtypes():
    assert mt.tensor([1.0]).dtype == np.float32
    assert mt.tensor([1, 2]).dtype.kind == "i"
    assert mt.tensor(np.zeros(2, np.float64)).dtype == np.float64
    assert mt.tensor([1.0], dtype=np.float64).dtype == np.float64
    with pytest.raises(TypeError, match="floating dtype"):
        mt.tensor([1, 2], requires_grad=True)


def test_backward_errors_are_clear():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="pass grad="):
        (x * 2).backward()
    with pytest.raises(ValueError, match="grad has shape"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        mt.tensor([1.0]).sum().backward()


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(mt.Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, grad):
            return grad * self.a  # should be 2 * a

    x = leaf([1.0, 2.0])
    with pytest.raises(mt.GradcheckError, match="index"):
        mt.gradcheck(WrongSquare.apply, [x])
    with pytest.raises(mt.GradcheckError, match="directional"):
        mt.gradcheck(WrongSquare.apply, [x], directions=3)


def test_gradcheck_catches_a_missing_transpose():
    class WrongMatmul(mt.Function):
        def forward(self, a, b):
            self.a, self.b = a, b
            return a @ b

        def backward(self, grad):
            return grad @ self.b, self.a @ grad  # transposes forgotten (square inputs)

    x, y = leaf(np.arange(4.0).reshape(2, 2)), leaf(np.arange(4.0).reshape(2, 2) + 1)
    with pytest.raises(mt.GradcheckError):
        mt.gradcheck(WrongMatmul.apply, [x, y])


def test_gradcheck_catches_a_nan_gradient():
    class NanBackward(mt.Function):
        def forward(self, a):
            return a * 2

        def backward(self, grad):
            return grad * float("nan")

    with pytest.raises(mt.GradcheckError):
        mt.gradcheck(NanBackward.apply, [leaf([1.0, 2.0])])
    with pytest.raises(mt.GradcheckError):
        mt.gradcheck(NanBackward.apply, [leaf([1.0, 2.0])], directions=2)


def test_gradcheck_perturbs_inputs_of_any_memory_layout():
    # A tensor made from a transposed or broadcast array keeps its strides; perturbing a
    # reshaped copy instead of the data itself would give central differences of 0.
    for array in (np.arange(6.0).reshape(2, 3).T, np.broadcast_to(np.arange(2.0), (2, 2))):
        x = leaf(array)
        weights = mt.tensor(np.arange(1.0, x.size + 1).reshape(x.shape))
        assert mt.gradcheck(lambda t: t * weights, [x])
        assert mt.gradcheck(lambda t: t * weights, [x], directions=2)


def test_gradcheck_needs_float64():
    with pytest.raises(TypeError, match="float64"):
        mt.gradcheck(lambda t: t * 2, [mt.tensor([1.0], requires_grad=True)])


def test_unknown_backend():
    with pytest.raises(ValueError, match="expected one of"):
        mt.set_backend("jax")


def test_cupy_unavailable_is_one_clear_error(backend):
    if mt.gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(mt.DeviceError, match="cupy"):
        mt.set_backend("cupy")
    assert mt.get_backend() == "numpy"


def test_a_cupy_that_cannot_compute_fails_at_the_switch(backend, monkeypatch):
    """CuPy imports and sees a GPU, but its CUDA libraries are missing: set_backend runs a
    kernel, a matmul and a random draw, so the error comes there, naming the fix."""
    if backend != "numpy":
        pytest.skip("swaps the CuPy module; once is enough")

    def missing_library(*args, **kwargs):
        raise RuntimeError("CuPy failed to load libnvrtc.so.12")
    broken = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)),
        arange=missing_library, float32=np.float32)
    monkeypatch.setitem(sys.modules, "broken_cupy", broken)
    monkeypatch.setenv("MINITRANSFORMER_CUPY_MODULE", "broken_cupy")
    monkeypatch.setattr(mt.backend, "_cupy", None)
    message = r"cannot compute on the GPU \(RuntimeError: CuPy failed to load libnvrtc.*\[gpu\]"
    with pytest.raises(mt.DeviceError, match=message):
        mt.set_backend("cupy")
    assert mt.get_backend() == "numpy" and not mt.gpu_available()


def test_mixing_devices_names_both(backend):
    if backend != "cupy":
        pytest.skip("needs a GPU")
    gpu = mt.tensor([1.0])
    cpu = gpu.to("cpu")
    with pytest.raises(mt.DeviceError, match="'cpu'.*'gpu'|'gpu'.*'cpu'"):
        gpu + cpu
    with pytest.raises(mt.DeviceError):
        gpu * np.ones(1, np.float32)
    moved = leaf([2.0]).to("cpu")
    assert moved.device == "cpu"


def test_mixing_devices_in_masks_names_both(backend):
    if backend != "cupy":
        pytest.skip("needs a GPU")
    host_mask, gpu_mask = np.ones((1, 1, 2, 2), bool), mt.masks.causal_mask(2)
    both = "'cpu'.*'gpu'|'gpu'.*'cpu'"
    with pytest.raises(mt.DeviceError, match=f"combine_masks: masks are on ({both})"):
        mt.masks.combine_masks(gpu_mask, host_mask)
    scores = mt.tensor(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(mt.DeviceError, match=f"masked_fill: mask is on ({both})"):
        scores.masked_fill(host_mask, -1.0)
    with pytest.raises(mt.DeviceError, match=f"where: condition is on ({both})"):
        mt.where(host_mask, scores, 0.0)
    assert scores.masked_fill(gpu_mask, -1.0).numpy()[0, 0, 0].tolist() == [-1.0, 0.0]


def test_manual_seed_seeds_generators_created_later():
    """Each device's generator is made on first use from the last manual_seed: seeding
    before CuPy is first loaded still decides the GPU draws."""
    draws = {}
    for seed in (5, 6, 5):
        mt.manual_seed(seed)
        draws.setdefault(seed, []).append(host(mt.backend.rng().random(4)))
    np.testing.assert_array_equal(draws[5][0], draws[5][1])
    assert not np.array_equal(draws[5][0], draws[6][0])


def test_to_device_is_differentiable():
    x = leaf([1.0, 2.0])
    y = (x.to("cpu") * 3).sum()
    y.backward()
    assert x.grad is not None and mt.tensor(x.grad).device == x.device
    np.testing.assert_allclose(host(x.grad), [3.0, 3.0])


def test_only_the_backend_imports_numpy_or_cupy():
    package = pathlib.Path(mt.__file__).parent
    pattern = re.compile(r"^\s*(import|from)\s+(numpy|cupy)\b", re.MULTILINE)
    offenders = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
                 if p.name != "backend.py" and pattern.search(p.read_text())]
    assert offenders == [], f"these modules import numpy/cupy directly: {offenders}"
