"""Softmax, log-softmax, ReLU, SiLU, GELU and dropout: elementwise and row-wise functions.

GELU needs the error function, which NumPy lacks; precision follows the dtype. float64
arrays (gradient checks, comparisons with PyTorch) get W. J. Cody's rational
approximations, good to float64 rounding; float32 arrays (training) get the single
rational function that Eigen, XLA and JAX use, which needs no exp and no branches and
is within 5e-7 of erf (a few float32 ulps).
"""
import math

from .. import arguments, backend
from ..autograd import Function
from ..ops import relu
from .common import floating, in_pieces, keep_mask, widened


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


# ---- the error function, for the exact GELU -----------------------------------------

# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23
# (1969), as in his CALERF routine. Coefficients are listed highest power first.
_SMALL_P = (1.85777706184603153e-1, 3.16112374387056560e00, 1.13864154151050156e02,
            3.77485237685302021e02, 3.20937758913846947e03)
_SMALL_Q = (1.0, 2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
            2.84423683343917062e03)
_MID_P = (2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e00,
          6.61191906371416295e01, 2.98635138197400131e02, 8.81952221241769090e02,
          1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03)
_MID_Q = (1.0, 1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
          1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
          3.43936767414372164e03, 1.23033935480374942e03)
_TAIL_P = (1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1,
           1.25781726111229246e-1, 1.60837851487422766e-2, 6.58749161529837803e-4)
_TAIL_Q = (1.0, 2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
           6.05183413124413191e-2, 2.33520497626869185e-3)

# Eigen's generic_fast_erf_float: erf(x) = x P(x^2) / Q(x^2) on [-4, 4], where float32
# erf has reached +-1.
_FAST_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
           -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
           -1.60960333262415e-02)
_FAST_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
           -7.37332916720468e-03, -1.42647390514189e-02)


def _polynomial(t, coefficients):
    """Horner's rule, in place on one fresh array; ``coefficients`` highest power first."""
    value = coefficients[0] * t
    value += coefficients[1]
    for c in coefficients[2:]:
        value *= t
        value += c
    return value


def _rational(t, p, q):
    value = _polynomial(t, p)
    value /= _polynomial(t, q)
    return value


def erf(x):
    """The error function of a float array, elementwise (same dtype and device): Cody's
    approximations for float64, Eigen's one rational function otherwise."""
    if x.dtype != backend.host.float64:
        x = backend.get_array_module(x).clip(x, -4, 4)
        value = _rational(x * x, _FAST_P, _FAST_Q)
        value *= x
        return value
    return _erf_float64(x)


def _erf_float64(x):
    """Cody's three ranges of |x|, each evaluated only on its own elements."""
    xp = backend.get_array_module(x)
    out = xp.empty_like(x)
    y = xp.abs(x)
    small = y <= 0.46875
    xs = x[small]
    out[small] = xs * _rational(xs * xs, _SMALL_P, _SMALL_Q)
    # Elsewhere erf(x) = sign(x) (1 - erfc|x|), erfc(y) = exp(-y^2) R(y).
    mid = ~small & (y <= 4)
    ym = y[mid]
    out[mid] = 1 - xp.exp(-ym * ym) * _rational(ym, _MID_P, _MID_Q)
    tail = ~small & ~mid  # NaN lands here, and stays NaN
    yt = y[tail]
    inverse_square = 1 / (yt * yt)
    r = 1 / math.sqrt(math.pi) - inverse_square * _rational(inverse_square, _TAIL_P, _TAIL_Q)
    out[tail] = 1 - xp.exp(-yt * yt) * r / yt
    large = ~small
    out[large] = xp.copysign(out[large], x[large])
    return out


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
