"""The error function, which NumPy lacks and the exact GELU needs; precision follows the
dtype. float64 arrays (gradient checks, comparisons with PyTorch) get W. J. Cody's
rational approximations, good to float64 rounding; float32 arrays (training) get the one
rational function of Eigen, XLA and JAX: no exp, no branches, within 5e-7 of erf (a few
float32 ulps). The coefficients are copied from those sources (cited below).
"""
import math

from .. import backend

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
