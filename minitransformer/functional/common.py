"""Small helpers shared by the functional modules."""
from .. import backend
from ..autograd import Tensor


def array_like(value, like):
    """``value`` (a Tensor, an array or a nested list) as an array on the device of ``like``."""
    data = value.data if isinstance(value, Tensor) else value
    if not backend.is_array(data):
        data = backend.host.asarray(data)
    return backend.to_device(data, like.device)


def floating(owner, **tensors):
    """Each named tensor must hold floats: softmax, normalisation and losses are
    meaningless on integers (and NumPy's own error about it names no argument)."""
    for name, t in tensors.items():
        if t.dtype.kind != "f":
            raise TypeError(f"{owner}: {name} must be a floating tensor, got dtype {t.dtype}; "
                            f"convert it first, e.g. mt.tensor({name}, dtype='float32')")


def indices(value, like, size, what):
    """``value`` as an array of integers in [0, size) on the device of ``like``."""
    data = array_like(value, like)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {data.dtype}")
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if low < 0 or high >= size:
        raise ValueError(f"{what} must lie in [0, {size}), got {low if low < 0 else high}")
    return data


def keep_mask(shape, p, dtype, device):
    """Inverted dropout's multiplier: 0 with probability p, else 1 / (1 - p), so that
    the expected value of x * keep stays x."""
    draw = backend.rng(device).random(shape, dtype=backend.DEFAULT_DTYPE)
    keep = (draw >= p).astype(dtype)
    keep *= 1 / (1 - p)
    return keep


def widened(x):
    """``x`` in float32 if it is half precision, else as it is: softmax and the losses add
    up many exps, which lose digits in float16 and overflow past 65504 (mixed precision
    keeps such sums in float32, as LayerNorm does)."""
    return x.astype(backend.host.float32) if x.dtype.itemsize < 4 else x
