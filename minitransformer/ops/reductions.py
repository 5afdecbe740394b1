"""Reductions over axes: sum, mean, max.

Their backward passes broadcast the upstream gradient back over the reduced axes,
so ``keepdims=False`` outputs first get their reduced axes re-inserted as size 1.
"""
from .. import arguments
from ..autograd import Function


def _expand(grad, axes):
    """Re-insert the reduced ``axes`` (sorted) as size 1, so ``grad`` broadcasts back."""
    for a in axes:
        grad = grad.reshape(grad.shape[:a] + (1,) + grad.shape[a:])
    return grad


class Sum(Function):
    """sum over ``axis``. d/da = 1 broadcast over the summed axes."""
    saves_values = False

    def forward(self, a, axis=None, keepdims=False):
        self.shape = a.shape
        self.axes, self.keepdims = arguments.axes(type(self).__name__.lower(), axis, a.ndim), keepdims
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, grad):
        grad = grad if self.keepdims else _expand(grad, self.axes)
        return self.xp.broadcast_to(grad, self.shape)


def sum(a, axis=None, keepdims=False):
    """The sum over ``axis`` (an int, a tuple, or None for all axes)."""
    return Sum.apply(a, axis=axis, keepdims=keepdims)


class Mean(Function):
    """mean over ``axis``. d/da = 1/n broadcast over the averaged axes (n elements each)."""
    saves_values = False

    def forward(self, a, axis=None, keepdims=False):
        self.shape = a.shape
        self.axes, self.keepdims = arguments.axes(type(self).__name__.lower(), axis, a.ndim), keepdims
        self.count = 1
        for ax in self.axes:
            self.count *= a.shape[ax]
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, grad):
        grad = grad if self.keepdims else _expand(grad, self.axes)
        return self.xp.broadcast_to(grad / self.count, self.shape)


def mean(a, axis=None, keepdims=False):
    """The mean over ``axis`` (an int, a tuple, or None for all axes)."""
    return Mean.apply(a, axis=axis, keepdims=keepdims)


class Max(Function):
    """max over ``axis``. The gradient goes to the maximal elements, split evenly at ties;
    where the max is NaN (a NaN input), to the NaN elements, as in PyTorch."""
    def forward(self, a, axis=None, keepdims=False):
        self.a = a
        self.axes, self.keepdims = arguments.axes(type(self).__name__.lower(), axis, a.ndim), keepdims
        self.out = a.max(axis=self.axes, keepdims=True)
        return self.out if keepdims else self.out.reshape(
            [n for i, n in enumerate(a.shape) if i not in self.axes])

    def backward(self, grad):
        grad = grad if self.keepdims else _expand(grad, self.axes)
        xp = self.xp
        winners = (self.a == self.out) | (xp.isnan(self.a) & xp.isnan(self.out))
        winners = winners.astype(grad.dtype)
        return grad * winners / winners.sum(axis=self.axes, keepdims=True)


def max(a, axis=None, keepdims=False):
    """The maximum over ``axis`` (an int, a tuple, or None for all axes)."""
    return Max.apply(a, axis=axis, keepdims=keepdims)
