"""Softmax, log-softmax, ReLU, SiLU, GELU (its erf: ``erf.py``) and dropout."""
import math

from .. import arguments, backend
from ..autograd import Function
from ..ops import relu
from .common import floating, in_pieces, keep_mask, widened
from .erf import erf


class Softmax(Function):
    """y = exp(x - max) / sum(exp(x - max)) along ``axis``; any shape.
    From dy_i = y_i (dx_i - sum_j y_j dx_j):  dx = y (g - sum(g y))."""
    def forward(self, x, axis):
        self.axis = axis
        y = self.xp.array(widened(x))  # fresh, also for 0-d x (where x - max is a scalar)
        y -= y.max(axis=axis, keepdims=True)  # shifting by the max keeps exp finite
        self.xp.exp(y, out=y)
        y /= y.sum(axis=axis, keepdims=True)
        self.y = y
        return y.astype(x.dtype, copy=False)

    def backward(self, grad):
        return (grad - (grad * self.y).sum(axis=self.axis, keepdims=True)) * self.y


class LogSoftmax(Function):
    """y = x - max - log(sum(exp(x - max))) along ``axis``; any shape.
    From dy_i = dx_i - sum_j softmax_j dx_j:  dx = g - softmax sum(g)."""
    def forward(self, x, axis):
        self.axis = axis
        y = widened(x) - x.max(axis=axis, keepdims=True)
        self.softmax = self.xp.exp(y)  # kept, so that backward needs no second exp
        total = self.softmax.sum(axis=axis, keepdims=True)
        self.softmax /= total
        y -= self.xp.log(total)
        return y.astype(x.dtype, copy=False)

    def backward(self, grad):
        gx = self.softmax * -grad.sum(axis=self.axis, keepdims=True)
        gx += grad
        return gx


def softmax(x, axis=-1):
    """Softmax along ``axis``; rows sum to 1. Stable for large logits (shifted by the max)."""
    floating("softmax", x=x)
    return Softmax.apply(x, axis=arguments.single_axis("softmax", axis, x.ndim))


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed without taking the log of a softmax."""
    floating("log_softmax", x=x)
    return LogSoftmax.apply(x, axis=arguments.single_axis("log_softmax", axis, x.ndim))


class SiLU(Function):
    """x sigmoid(x) (Swish-1); any shape. With s = sigmoid(x), ds/dx = s (1 - s), so
    d/dx = s + x s (1 - s) = s (1 + x (1 - s))."""
    def forward(self, x):
        self.x = x
        e = self.xp.exp(-abs(x))  # <= 1: sigmoid without overflow for any x
        self.s = self.xp.where(x >= 0, 1, e) / (1 + e)
        return x * self.s

    def backward(self, grad):
        return grad * self.s * (1 + self.x * (1 - self.s))


def silu(x):
    """x * sigmoid(x), the gate of SwiGLU (LLaMA's feed-forward)."""
    floating("silu", x=x)
    return SiLU.apply(x)


class GELU(Function):
    """x Phi(x), Phi the standard normal CDF; any shape. d/dx = Phi(x) + x phi(x), phi the
    normal density. approximate="tanh": Phi(x) ~ (1 + tanh(u)) / 2 with
    u = sqrt(2/pi) (x + 0.044715 x^3), differentiated through tanh. Both directions are
    chains of many elementwise operations, so they run ``in_pieces``."""
    def forward(self, x, approximate):
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            out, self.cdf, self.t = in_pieces(_gelu_tanh, x)
        else:
            out, self.cdf = in_pieces(_gelu_exact, x)
        return out

    def backward(self, grad):
        if self.approximate == "tanh":
            return in_pieces(_gelu_tanh_backward, grad, self.x, self.cdf, self.t)
        return in_pieces(_gelu_exact_backward, grad, self.x, self.cdf)


def _gelu_exact(x):
    """(x Phi(x), Phi(x)), with PyTorch's formula so that the two agree to the last bits."""
    cdf = erf(x * (1 / math.sqrt(2)))
    cdf *= 0.5
    cdf += 0.5
    return x * cdf, cdf


def _gelu_tanh(x):
    """(x Phi(x), Phi(x), t) with Phi(x) ~ (1 + t) / 2, t = tanh(u)."""
    u = x * x
    u *= 0.044715
    u += 1
    u *= x
    u *= math.sqrt(2 / math.pi)
    t = backend.get_array_module(x).tanh(u, out=u)
    cdf = 0.5 * t
    cdf += 0.5
    return x * cdf, cdf, t


def _gelu_exact_backward(grad, x, cdf):
    """grad (Phi(x) + x phi(x))."""
    slope = x * x
    slope *= -0.5
    backend.get_array_module(x).exp(slope, out=slope)
    slope *= 1 / math.sqrt(2 * math.pi)
    slope *= x
    slope += cdf
    slope *= grad
    return slope


def _gelu_tanh_backward(grad, x, cdf, t):
    """grad (Phi(x) + x/2 (1 - t^2) du/dx)."""
    slope = x * x
    slope *= 3 * 0.044715
    slope += 1
    slope *= 1 - t * t
    slope *= 0.5 * math.sqrt(2 / math.pi)
    slope *= x
    slope += cdf
    slope *= grad
    return slope


def gelu(x, approximate="none"):
    """Gaussian error linear unit; ``approximate="tanh"`` is the GPT-2 approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    floating("gelu", x=x)
    return GELU.apply(x, approximate=approximate)


class Dropout(Function):
    """x * keep, keep = bernoulli(1 - p) / (1 - p); any shape. d/dx = keep."""
    def forward(self, x, p):
        self.keep = keep_mask(x.shape, p, x.dtype, backend.device_of(x))
        return x * self.keep

    def backward(self, grad):
        return grad * self.keep


def dropout(x, p, training):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p) while
    ``training``; otherwise, or when p == 0, return ``x`` itself."""
    p = arguments.fraction("dropout", "p", p)
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=p)
