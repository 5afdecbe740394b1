"""Differentiable primitive operations, as functions and as ``Tensor`` methods.

Each op is a ``Function`` subclass (forward next to backward) in one of the modules
below; this file gives them friendly names and installs them as operators on
``Tensor``, so ``(a * b).sum()`` builds a graph.
"""
import operator

from .. import arguments, backend
from ..autograd import Function, Tensor
from .arithmetic import (Add, Div, Exp, Log, Maximum, Mul, Neg, Pow, ReLU, Sqrt, Sub,
                         Tanh, Where, unbroadcast)
from .linalg import MatMul
from .reductions import Max, Mean, Sum
from .shape import Concatenate, GetItem, Reshape, Stack, Transpose, check_index_bounds


def add(a, b):
    return Add.apply(a, b)


def sub(a, b):
    return Sub.apply(a, b)


def mul(a, b):
    return Mul.apply(a, b)


def div(a, b):
    return Div.apply(a, b)


def neg(a):
    return Neg.apply(a)


def pow(a, b):
    return Pow.apply(a, b)


def exp(a):
    return Exp.apply(a)


def log(a):
    return Log.apply(a)


def sqrt(a):
    return Sqrt.apply(a)


def tanh(a):
    return Tanh.apply(a)


def maximum(a, b):
    return Maximum.apply(a, b)


def relu(a):
    """max(a, 0), with gradient 0 at 0 (PyTorch's); ``functional.relu`` is this one."""
    return ReLU.apply(a)


def matmul(a, b):
    return MatMul.apply(a, b)


def sum(a, axis=None, keepdims=False):
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(a, axis=None, keepdims=False):
    return Mean.apply(a, axis=axis, keepdims=keepdims)


def max(a, axis=None, keepdims=False):
    return Max.apply(a, axis=axis, keepdims=keepdims)


def reshape(a, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape.apply(a, shape=tuple(shape))


def transpose(a, *axes):
    """Permute axes (reverse them when none are given), like ``ndarray.transpose``."""
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    if axes:
        axes = tuple(arguments.single_axis("transpose", ax, a.ndim) for ax in axes)
    return Transpose.apply(a, axes=axes or None)


def swapaxes(a, axis1, axis2):
    axis1, axis2 = (arguments.single_axis("swapaxes", ax, a.ndim) for ax in (axis1, axis2))
    axes = list(range(a.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose.apply(a, axes=tuple(axes))


def getitem(a, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    check_index_bounds(a.shape, index)
    return GetItem.apply(a, index=index)


def concatenate(tensors, axis=0):
    tensors = list(tensors)
    ndim = tensors[0].ndim if tensors else 0
    return Concatenate.apply(*tensors, axis=arguments.single_axis("concatenate", axis, ndim))


def stack(tensors, axis=0):
    tensors = list(tensors)
    ndim = tensors[0].ndim + 1 if tensors else 1
    return Stack.apply(*tensors, axis=arguments.single_axis("stack", axis, ndim))


def where(condition, a, b):
    """Elementwise ``a`` where ``condition`` (a boolean array or tensor) holds, else ``b``."""
    return _where("where", "condition", condition, a, b)


def masked_fill(a, mask, value):
    """``a`` with ``value`` wherever the boolean ``mask`` is True (mask broadcasts to ``a``)."""
    return _where("masked_fill", "mask", mask, value, a)


def _where(op_name, name, condition, a, b):
    condition = condition.data if isinstance(condition, Tensor) else condition
    if not backend.is_array(condition) or condition.dtype != bool:
        raise TypeError(f"{op_name}: {name} must be a boolean array, got "
                        f"{getattr(condition, 'dtype', type(condition).__name__)}")
    device = next((t.device for t in (a, b) if isinstance(t, Tensor)), None)
    if device is not None and backend.device_of(condition) != device:
        raise backend.DeviceError(
            f"{op_name}: {name} is on {backend.device_of(condition)!r} but the tensor is on "
            f"{device!r}; move it with mt.tensor({name}, device={device!r})")
    return Where.apply(a, b, condition=condition)


class ToDevice(Function):
    """Copy to another device. The gradient is copied back."""
    saves_values = False

    def forward(self, a, device):
        self.source = backend.device_of(a)
        return backend.to_device(a, device)

    def backward(self, grad):
        return backend.to_device(grad, self.source)


def to(a, device):
    """This tensor on ``device`` (``"cpu"`` or ``"gpu"``); differentiable."""
    device = backend.check_device(device)
    return a if a.device == device else ToDevice.apply(a, device=device)


def _comparison(compare):
    """Elementwise ``compare`` giving a boolean tensor outside the graph (as in PyTorch),
    so that ``a == b`` means what it means for arrays."""
    def method(a, b):
        b = b.data if isinstance(b, Tensor) else b
        return Tensor(compare(a.data, b))
    return method


def _install_tensor_methods():
    T = Tensor
    T.__add__ = add
    T.__radd__ = lambda a, b: add(b, a)
    T.__sub__ = sub
    T.__rsub__ = lambda a, b: sub(b, a)
    T.__mul__ = mul
    T.__rmul__ = lambda a, b: mul(b, a)
    T.__truediv__ = div
    T.__rtruediv__ = lambda a, b: div(b, a)
    T.__neg__ = neg
    T.__pow__ = pow
    T.__rpow__ = lambda a, b: pow(b, a)
    T.__matmul__ = matmul
    T.__rmatmul__ = lambda a, b: matmul(b, a)
    T.__getitem__ = getitem
    for f in (exp, log, sqrt, tanh, relu, sum, mean, max, reshape, transpose, swapaxes,
              masked_fill, to):
        setattr(T, f.__name__, f)
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(T, f"__{name}__", _comparison(getattr(operator, name)))
    T.permute = transpose
    T.T = property(lambda a: transpose(a))


_install_tensor_methods()

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "tanh",
           "maximum", "relu", "matmul", "sum", "mean", "max", "reshape", "transpose",
           "swapaxes", "getitem", "concatenate", "stack", "where", "masked_fill", "to",
           "unbroadcast"]
