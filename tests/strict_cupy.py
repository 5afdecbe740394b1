"""A strict CPU stand-in for CuPy: NumPy arrays that behave like ``cupy.ndarray`` wherever
a CPU-only run can tell the difference. Test code only.

Importing it as ``cupy`` (``MINITRANSFORMER_CUPY_MODULE=strict_cupy``, see
``minitransformer/backend.py``) runs the CuPy code paths on a machine without a GPU. What
it enforces, each as real CuPy 14 does:

- a host ``numpy.ndarray`` mixed with a device array in an operator, ufunc or function
  raises ``TypeError`` (also through ``__array_ufunc__`` / ``__array_function__``, so
  ``numpy_array + device_array`` fails too); only Python and NumPy *scalars* mix;
- ``numpy.asarray(device_array)`` raises ``TypeError`` (use ``asnumpy`` or ``.get()``);
- a host array assigned into a device slice raises ``ValueError``;
- reductions and integer indexing give 0-d device arrays, never NumPy scalars: such a
  value has no ``__index__`` (``range(x)`` and ``list[x]`` fail), no ``__round__``, no
  hash, and is not a ``float`` (``json.dumps`` fails); ``int(x)``/``float(x)`` work;
- only names that exist in CuPy exist: module functions, ndarray methods, ufunc methods,
  ``random.Generator`` methods (lists in ``fixtures/cupy_names.json``, dumped from the real
  wheel by ``fixtures/make_cupy_names.py``); a name CuPy has but NumPy lacks is missing
  here unless emulated below;
- out-of-range integer *array* indices wrap around (CuPy does not bounds-check them).

What it cannot catch: speed (host round trips and synchronisations), GPU memory, CUDA
numerics (float32 reductions and matmuls round differently, cuRAND draws differ from
NumPy's), and any NumPy function whose CuPy version exists under the same name but takes
other arguments or returns other dtypes.
"""
import builtins  # the namespace below shadows any, all, abs, sum, max, min, ...
import json
import pathlib
import sys
import types

import numpy

_NAMES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "cupy_names.json").read_text())
_SCALARS = (bool, int, float, complex, numpy.generic)


def _unsupported(value):
    return TypeError(f"Unsupported type {type(value)}")  # CuPy's own message


def _unwrap(value, nested=True):
    """The NumPy array inside a device array; a host ndarray is refused, as by CuPy.
    ``nested``: also look inside lists and tuples (function arguments, not ufunc ones)."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, numpy.ndarray):
        raise _unsupported(value)
    if nested and isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _wrap(value):
    """Device arrays for every array or NumPy scalar in a result."""
    if isinstance(value, (numpy.ndarray, numpy.generic)):
        return ndarray(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _ufunc_operand(value):
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, _SCALARS):
        return value
    raise _unsupported(value)


class ufunc:
    """A NumPy ufunc whose operands must be device arrays or scalars."""

    def __init__(self, name):
        self._np = getattr(numpy, name)
        self.__name__ = name

    def __call__(self, *args, out=None, **kwargs):
        args = [_ufunc_operand(a) for a in args]
        if out is not None:
            kwargs["out"] = _ufunc_operand(out)
        result = _wrap(self._np(*args, **kwargs))
        return out if out is not None else result

    def __getattr__(self, name):
        if name not in _NAMES["ufunc_methods"]:
            raise AttributeError(f"cupy.ufunc has no attribute {name!r}")
        method = getattr(self._np, name)
        if name == "at":  # at(array, index, values): the index may be on the host
            return lambda a, index, *b: _wrap(method(_unwrap(a), _index(index), *_unwrap(b)))

        def call(*args, **kwargs):
            return _wrap(method(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
        return call


def _function(numpy_function):
    def call(*args, **kwargs):
        return _wrap(numpy_function(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
    call.__name__ = numpy_function.__name__
    return call


def _index(key):
    """An index key for the NumPy array inside: CuPy copies host index arrays (and lists)
    to the device, so they are allowed here, unlike in arithmetic."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, list):  # an empty list indexes nothing, as integers
        return numpy.asarray(key) if key else numpy.zeros(0, numpy.intp)
    return key if isinstance(key, numpy.ndarray) else _unwrap(key)


def _wrap_out_of_range(array, key):
    """CuPy does not bounds-check integer array indices: index n of an axis of size n
    reads element 0. Emulated for keys of ints, slices and integer arrays."""
    parts = key if isinstance(key, tuple) else (key,)
    if len(parts) > array.ndim or builtins.any(p is None or p is Ellipsis or getattr(
            p, "dtype", None) == numpy.bool_ for p in parts):
        return key  # each part is one axis only in the cases handled here
    wrapped = tuple(p % array.shape[axis] if isinstance(p, numpy.ndarray) and p.dtype.kind in "iu"
                    and array.shape[axis] else p for axis, p in enumerate(parts))
    return wrapped if isinstance(key, tuple) else wrapped[0]


def _operator(name):
    numpy_op = getattr(numpy.ndarray, name)

    def op(self, other):
        if not isinstance(other, (ndarray,) + _SCALARS):
            if getattr(other, "__array_priority__", 0) > self.__array_priority__:
                return NotImplemented  # e.g. a Tensor: let its reflected operator run
            raise _unsupported(other)
        result = numpy_op(self._a, _ufunc_operand(other))
        return self if name.startswith("__i") else _wrap(result)  # in place: same array
    op.__name__ = name
    return op


class ndarray:
    """A device array: a NumPy array reachable only the way CuPy allows."""
    __slots__ = ("_a",)
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, array):
        self._a = array

    # what ``numpy`` sees: no implicit conversion; ufuncs and functions run on the device
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, numpy_ufunc, method, *inputs, **kwargs):
        device_ufunc = globals().get(numpy_ufunc.__name__)
        if not isinstance(device_ufunc, ufunc):
            return NotImplemented
        target = device_ufunc if method == "__call__" else getattr(device_ufunc, method)
        return target(*inputs, **kwargs)

    def __array_function__(self, numpy_function, types, args, kwargs):
        device_function = globals().get(numpy_function.__name__)
        if device_function is None or numpy_function.__module__ not in ("numpy", None):
            return NotImplemented
        return device_function(*args, **kwargs)

    # indexing
    def __getitem__(self, key):
        key = _wrap_out_of_range(self._a, _index(key))
        return _wrap(self._a[key])

    def __setitem__(self, key, value):
        if isinstance(value, numpy.ndarray) and value.ndim:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        if not isinstance(value, (ndarray, numpy.ndarray) + _SCALARS):
            raise _unsupported(value)
        self._a[_wrap_out_of_range(self._a, _index(key))] = (
            value._a if isinstance(value, ndarray) else value)

    # conversions CuPy allows (each a device-to-host synchronisation)
    def __bool__(self):
        return builtins.bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __complex__(self):
        return complex(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a, spec)

    def __neg__(self):
        return _wrap(-self._a)

    def __pos__(self):
        return _wrap(+self._a)

    def __abs__(self):
        return _wrap(numpy.absolute(self._a))

    def __invert__(self):
        return _wrap(~self._a)

    # CuPy's own methods
    def get(self):
        """A host copy, as ``cupy.ndarray.get``."""
        return self._a.copy()

    def set(self, host_array):
        self._a[...] = host_array

    def fill(self, value):
        self[...] = value

    def scatter_add(self, slices, value):
        add.at(self, slices, value)

    def __getattr__(self, name):
        if name not in _NAMES["ndarray"] or not hasattr(self._a, name):
            raise AttributeError(f"cupy.ndarray has no attribute {name!r}")
        value = getattr(self._a, name)
        if callable(value):
            return _function(value)
        return _wrap(value)


for _name in _NAMES["ndarray_dunders"]:
    if hasattr(numpy.ndarray, _name) and _name not in ndarray.__dict__ and _name[2:-2] in (
            "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift divmod "
            "radd rsub rmul rtruediv rfloordiv rmod rpow rmatmul rand ror rxor rlshift "
            "rrshift rdivmod iadd isub imul itruediv ifloordiv imod ipow iand ior ixor "
            "ilshift irshift eq ne lt le gt ge").split():
        setattr(ndarray, _name, _operator(_name))


# ---- the module namespace: only names CuPy has --------------------------------------
def _host_data(a):
    """What ``asarray``/``array`` copy to the device: host arrays are allowed here."""
    return a if isinstance(a, numpy.ndarray) else _unwrap(a)


def asarray(a, dtype=None, order=None):
    """Host data (arrays, lists, scalars) to the device; device arrays as they are."""
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype, copy=False)
    return ndarray(numpy.array(_host_data(a), dtype=dtype, order=order or "K"))


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    return ndarray(numpy.array(_host_data(a), dtype=dtype, copy=copy, order=order, ndmin=ndmin))


def asnumpy(a, stream=None):
    return a.get() if isinstance(a, ndarray) else numpy.asarray(a)


def get_array_module(*args):
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else numpy


_EMULATED = {"ndarray", "ufunc", "asarray", "array", "asnumpy", "get_array_module"}
for _name in _NAMES["module"]["ufuncs"]:
    if hasattr(numpy, _name):
        globals()[_name] = ufunc(_name)
for _name in _NAMES["module"]["functions"]:
    if _name not in _EMULATED and callable(getattr(numpy, _name, None)):
        globals()[_name] = _function(getattr(numpy, _name))
for _name in _NAMES["module"]["types"] + _NAMES["module"]["values"]:
    if _name not in _EMULATED and hasattr(numpy, _name):
        globals()[_name] = getattr(numpy, _name)

linalg = types.SimpleNamespace(**{
    n: _function(getattr(numpy.linalg, n)) for n in _NAMES["linalg"]
    if callable(getattr(numpy.linalg, n, None)) and not isinstance(getattr(numpy.linalg, n), type)})


class _BitGenerator:
    """CuPy's cuRAND bit generator: its ``state`` is a method returning a device pointer,
    not NumPy's exportable dict."""

    def state(self):
        return 0


class Generator:
    """``cupy.random.Generator``: only its methods (no ``normal``, ``choice``,
    ``permutation``...), drawing device arrays from a NumPy generator."""

    def __init__(self, seed=None):
        self._numpy = numpy.random.default_rng(seed)
        self.bit_generator = _BitGenerator()

    def __getattr__(self, name):
        if name not in _NAMES["random_generator"]:
            raise AttributeError(f"cupy.random.Generator has no method {name!r}")
        return _function(getattr(self._numpy, name))


random = types.SimpleNamespace(default_rng=Generator, Generator=Generator)

# One GPU is always "present", and it has always finished its work.
cuda = types.SimpleNamespace(
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    Device=lambda device_id=0: types.SimpleNamespace(synchronize=lambda: None))
