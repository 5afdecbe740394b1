"""Argument checks shared by every public entry point, so that each class of bad
argument -- a size that is not a whole number, an axis out of range, a NaN where a
positive number belongs -- is refused in one place, with one kind of message: the
argument, what was expected, what was given.

Sizes accept any integer, NumPy's included (``np.int64(2)`` heads are two heads), but
not ``bool`` or ``2.0``. Axes follow NumPy: ``-ndim <= axis < ndim``, where a 0-d array
counts as having one axis (``np.sum(np.float64(1), axis=-1)`` works, as in PyTorch).
"""
import math
import numbers


def integer(owner, name, value, low=None, high=None, expected=None):
    """``value`` as a Python int, checked to lie in [low, high] (either end optional);
    ``expected`` words the range in the error instead (e.g. "a positive integer")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r} "
                        f"({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        expected = expected or (f"an integer >= {low}" if high is None else
                                f"an integer <= {high}" if low is None else
                                f"an integer in [{low}, {high}]")
        raise ValueError(f"{owner}: {name} must be {expected}, got {value}")
    return value


def positive_integer(owner, name, value):
    return integer(owner, name, value, low=1, expected="a positive integer")


def _real(owner, name, value):
    """``value`` as a float: any real number, NumPy's included, but not bool or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r} "
                        f"({type(value).__name__})")
    return float(value)


def positive_number(owner, name, value):
    """``value`` as a finite float > 0 (NaN and inf refused: they never mean a size)."""
    value = _real(owner, name, value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
    return value


def non_negative_number(owner, name, value):
    """``value`` as a finite float >= 0, e.g. a norm's eps (a negative one takes the
    square root of a negative number on a constant row)."""
    value = _real(owner, name, value)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return value


def fraction(owner, name, value, interval="[0, 1)"):
    """``value`` as a float in ``interval``: "[0, 1)" (a dropout rate) or "(0, 1]"
    (top_p, a share of probability mass). NaN lies in neither."""
    value = _real(owner, name, value)
    if not (0 <= value < 1 if interval == "[0, 1)" else 0 < value <= 1):
        raise ValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return value


def flag(owner, name, value):
    """``value`` as a bool: True or False (1, 0 and NumPy's booleans too), never a string,
    None or an array, which Python would merely read as true or false."""
    if isinstance(value, (str, bytes)) or getattr(value, "ndim", 0) or \
            value not in (True, False):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def broadcastable(owner, name, shape, target, target_name):
    """``shape`` must broadcast to ``target`` without growing it (NumPy's rule: each
    trailing dim 1 or equal), e.g. a mask to the attention scores (B, H, Lq, Lk)."""
    if len(shape) > len(target) or any(m not in (1, n) for m, n in
                                       zip(shape[::-1], target[::-1])):
        raise ValueError(f"{owner}: {name} has shape {tuple(shape)}, expected one that "
                         f"broadcasts to {target_name} = {tuple(target)}")


def axes(owner, axis, ndim):
    """``axis`` (None = all, an int, or a tuple of ints) as a sorted tuple of
    non-negative axes of an ``ndim``-dimensional array; a 0-d array has none to reduce."""
    if axis is None:
        return tuple(range(ndim))
    given = axis if isinstance(axis, (tuple, list)) else (axis,)
    normalized = [single_axis(owner, a, ndim) for a in given]
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{owner}: axis {axis} repeats an axis")
    return tuple(sorted(normalized)) if ndim else ()


def single_axis(owner, axis, ndim):
    """One axis as a non-negative int, ``-ndim <= axis < ndim`` (0-d: -1 or 0 -> 0)."""
    axis = integer(owner, "axis", axis)
    span = max(ndim, 1)
    if not -span <= axis < span:
        raise ValueError(f"{owner}: axis {axis} is out of range for a tensor with {ndim} "
                         f"dims; expected an axis in [{-span}, {span - 1}]")
    return axis % span
