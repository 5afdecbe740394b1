"""The strict CuPy stand-in catches what it claims to: each test seeds one GPU-only bug (code
that NumPy runs happily and real CuPy refuses) and proves that the stand-in refuses it too,
both directly and through the engine. Runs on the stand-in backend only."""
import json
import os

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend as mt_backend

pytestmark = pytest.mark.usefixtures("standin_only")


@pytest.fixture
def standin_only(backend):
    if backend != "cupy" or os.environ.get("MINITRANSFORMER_CUPY_MODULE") != "strict_cupy":
        pytest.skip("a self-test of the strict CuPy stand-in")


@pytest.fixture
def cp():
    return mt_backend.xp("gpu")


def run_on_device(forward, *values):
    """Apply a one-off Function with the given forward to device tensors."""
    class Seeded(mt.Function):
        def backward(self, grad):
            return grad
    Seeded.forward = lambda self, *arrays: forward(self.xp, *arrays)
    return Seeded.apply(*(mt.tensor(v, device="gpu") for v in values))


def test_a_host_array_built_inside_an_op_fails():
    # NumPy-only code: the scale is made with the host library, not with self.xp
    with pytest.raises(TypeError, match="Unsupported type"):
        run_on_device(lambda xp, a: a * mt_backend.host.ones(a.shape, a.dtype), [1.0, 2.0])
    with pytest.raises(TypeError, match="Unsupported type"):  # the other operand order
        run_on_device(lambda xp, a: mt_backend.host.ones(a.shape, a.dtype) + a, [1.0, 2.0])
    fixed = run_on_device(lambda xp, a: a * xp.ones(a.shape, a.dtype), [1.0, 2.0])
    assert fixed.numpy().tolist() == [1.0, 2.0]


def test_a_host_mask_mixed_in_fails(cp):
    scores = cp.zeros((2, 2), dtype=cp.float32)
    host_mask = np.tri(2, dtype=bool)
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.where(host_mask, scores, -1.0)
    with pytest.raises(TypeError, match="Unsupported type"):
        scores & host_mask
    with pytest.raises(TypeError, match="Unsupported type"):
        np.logical_and(host_mask, scores > 0)  # NumPy's own ufunc, through __array_ufunc__
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        scores[0] = np.ones(2)  # a host array assigned into a device slice
    assert cp.where(cp.asarray(host_mask), scores, -1.0).get().tolist() == [[0, -1], [0, 0]]


def test_numpy_only_names_fail(cp):
    a = cp.arange(4.0)
    for missing in ("insert", "geomspace", "vecdot", "spacing", "unstack"):
        assert hasattr(np, missing) and not hasattr(cp, missing)
    with pytest.raises(AttributeError, match="resize"):
        a.resize(2)
    rng = cp.random.default_rng(0)
    for method in ("normal", "choice", "permutation", "shuffle"):
        with pytest.raises(AttributeError, match=method):
            getattr(rng, method)
    assert rng.standard_normal((2,), dtype=cp.float32).dtype == cp.float32
    with pytest.raises(AttributeError, match="normal"):
        run_on_device(lambda xp, x: x + mt_backend.rng("gpu").normal(0, 1, x.shape), [0.0])


def test_reductions_are_device_arrays_not_python_numbers(cp):
    ids = cp.asarray([[1, 3], [2, 0]])
    total, best = ids.sum(), ids.argmax()
    assert isinstance(total, cp.ndarray) and total.shape == ()
    assert int(total) == 6 and float(total) == 6.0  # explicit conversions work, as in CuPy
    vocab = ["a", "b", "c", "d"]
    with pytest.raises(TypeError):
        vocab[best]  # a 0-d array has no __index__
    with pytest.raises(TypeError):
        range(total)
    with pytest.raises(TypeError):
        {total: "unhashable"}
    with pytest.raises(TypeError):
        json.dumps({"loss": ids.astype(cp.float32).mean()})
    with pytest.raises(TypeError):
        round(ids.max(), 2)
    # through the engine: a loss recorded as a Python number needs .item()
    loss = (mt.tensor([1.0, 2.0], device="gpu") * 2).sum()
    with pytest.raises(TypeError):
        json.dumps(loss.data)
    assert json.dumps(loss.item()) == "6.0"


def test_implicit_conversion_to_numpy_fails(cp):
    a = cp.arange(3)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.testing.assert_array_equal(a, [0, 1, 2])
    assert cp.asnumpy(a).tolist() == [0, 1, 2] and a.get().tolist() == [0, 1, 2]
    assert isinstance(np.exp(a), cp.ndarray)  # a NumPy ufunc on device data runs on the device


def test_out_of_range_index_arrays_wrap_around_as_in_cupy(cp):
    a = cp.arange(3) * 10
    assert a[cp.asarray([3, -4])].get().tolist() == [0, 20]
    with pytest.raises(IndexError):
        np.arange(3)[np.array([3])]  # NumPy refuses: the library must check for itself
