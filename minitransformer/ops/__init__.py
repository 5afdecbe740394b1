"""Differentiable primitive operations, as functions and as ``Tensor`` methods.

Each op is a ``Function`` subclass (forward next to backward) with its public function
right under it, in one of the modules below; this file gathers them and installs them
as operators and methods on ``Tensor``, so ``(a * b).sum()`` builds a graph.
"""
import operator

from ..autograd import Tensor
from .arithmetic import (Add, Div, Exp, Log, Maximum, Mul, Neg, Pow, ReLU, Sqrt, Sub, Tanh,
                         Where, add, div, exp, log, masked_fill, maximum, mul, neg, pow, relu,
                         sqrt, sub, tanh, unbroadcast, where)
from .linalg import MatMul, matmul
from .reductions import Max, Mean, Sum, max, mean, sum
from .shape import (Concatenate, GetItem, Reshape, Stack, ToDevice, Transpose, concatenate,
                    getitem, reshape, stack, swapaxes, to, transpose)


def _comparison(compare):
    """Elementwise ``compare`` giving a boolean tensor outside the graph (as in PyTorch),
    so that ``a == b`` means what it means for arrays."""
    def method(a, b):
        b = b.data if isinstance(b, Tensor) else b
        return Tensor(compare(a.data, b))
    return method


def _install_tensor_methods():
    T = Tensor
    for name, op in (("add", add), ("sub", sub), ("mul", mul), ("truediv", div),
                     ("pow", pow), ("matmul", matmul)):
        setattr(T, f"__{name}__", op)
        setattr(T, f"__r{name}__", lambda a, b, op=op: op(b, a))  # 2 - x is sub(2, x)
    T.__neg__ = neg
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
