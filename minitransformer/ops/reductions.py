"""Reductions over axes: sum, mean, max.

Their backward passes broadcast the upstream gradient back over the reduced axes, after
reshaping it to the input's shape with each reduced axis kept as size 1 (a
``keepdims=False`` output has lost those axes).
"""
import math

from .. import arguments
from ..autograd import Function


def _reduced_axes(name, a, axis):
    """The axes to reduce (sorted, non-negative) and ``a``'s shape with each one as 1."""
    axes = arguments.axes(name, axis, a.ndim)
    return axes, tuple(1 if i in axes else n for i, n in enumerate(a.shape))


class Sum(Function):
    """sum over ``axis``. d/da = 1 broadcast over the summed axes."""
    saves_values = False

    def forward(self, a, axis=None, keepdims=False):
        self.shape = a.shape
        self.axes, self.kept_shape = _reduced_axes("sum", a, axis)
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, grad):
        return self.xp.broadcast_to(grad.reshape(self.kept_shape), self.shape)


def sum(a, axis=None, keepdims=False):
    """The sum over ``axis`` (an int, a tuple, or None for all axes)."""
    return Sum.apply(a, axis=axis, keepdims=keepdims)


class Mean(Sum):
    """mean over ``axis``. d/da = 1/n broadcast over the averaged axes (n elements each):
    the sum's gradient, divided by n."""
    def forward(self, a, axis=None, keepdims=False):
        self.shape = a.shape
        self.axes, self.kept_shape = _reduced_axes("mean", a, axis)
        self.count = math.prod(a.shape[ax] for ax in self.axes)
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, grad):
        return super().backward(grad / self.count)


def mean(a, axis=None, keepdims=False):
    """The mean over ``axis`` (an int, a tuple, or None for all axes)."""
    return Mean.apply(a, axis=axis, keepdims=keepdims)


class Max(Function):
    """max over ``axis``. The gradient goes to the maximal elements, split evenly at ties;
    where the max is NaN (a NaN input), to the NaN elements, as in PyTorch."""
    def forward(self, a, axis=None, keepdims=False):
        self.a = a
        self.axes = arguments.axes("max", axis, a.ndim)
        self.out = a.max(axis=self.axes, keepdims=True)
        return self.out if keepdims else self.out.reshape(
            [n for i, n in enumerate(a.shape) if i not in self.axes])

    def backward(self, grad):
        grad = grad.reshape(self.out.shape)  # the reduced axes back, as size 1
        xp = self.xp
        winners = (self.a == self.out) | (xp.isnan(self.a) & xp.isnan(self.out))
        winners = winners.astype(grad.dtype)
        return grad * winners / winners.sum(axis=self.axes, keepdims=True)


def max(a, axis=None, keepdims=False):
    """The maximum over ``axis`` (an int, a tuple, or None for all axes)."""
    return Max.apply(a, axis=axis, keepdims=keepdims)
