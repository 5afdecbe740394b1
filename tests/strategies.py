"""Hypothesis strategies shared by the tests."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from minitransformer.backend import to_numpy as host  # noqa: F401 (re-exported)


def floats(lo=-3.0, hi=3.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def arrays(shape, lo=-3.0, hi=3.0):
    return hnp.arrays(np.float64, shape, elements=floats(lo, hi))


small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


@st.composite
def broadcastable_pair(draw, lo=-3.0, hi=3.0):
    """Two float64 arrays whose shapes broadcast against each other."""
    shapes, _ = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3,
                                                       max_side=4))
    return draw(arrays(shapes[0], lo, hi)), draw(arrays(shapes[1], lo, hi))


def leaf(array, requires_grad=True):
    """A float64 tensor on the current backend."""
    return mt.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)
