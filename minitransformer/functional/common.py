"""Small helpers shared by the functional modules."""
from .. import backend
from ..autograd import as_array


def floating(owner, **tensors):
    """Each named tensor must hold floats: softmax, normalisation and losses are
    meaningless on integers (and NumPy's own error about it names no argument)."""
    for name, t in tensors.items():
        if t.dtype.kind != "f":
            raise TypeError(f"{owner}: {name} must be a floating tensor, got dtype {t.dtype}; "
                            f"convert it first, e.g. mt.tensor({name}, dtype='float32')")


def indices(value, like, size, what):
    """``value`` as an array of integers in [0, size) (size None: >= 0) on the device of
    ``like``."""
    data = as_array(value, like.device)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {data.dtype}")
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if low < 0 or (size is not None and high >= size):
        span = "be >= 0" if size is None else f"lie in [0, {size})"
        raise ValueError(f"{what} must {span}, got {low if low < 0 else high}")
    return data


def keep_mask(shape, p, dtype, device):
    """Inverted dropout's multiplier: 0 with probability p, else 1 / (1 - p), so that
    the expected value of x * keep stays x. An element is dropped when its 32 random
    bits fall below round(p 2^32): the probability is p to within 2^-33, and integer
    bits cost half of what float32 uniforms do (two come from each 64-bit draw)."""
    threshold = min(round(p * 2 ** 32), 2 ** 32 - 1)
    keep = (backend.random_bits(shape, device) >= threshold).astype(dtype)
    keep *= 1 / (1 - p)
    return keep


def widened(x):
    """``x`` in float32 if it is half precision, else as it is: softmax and the losses add
    up many exps, which lose digits in float16 and overflow past 65504 (mixed precision
    keeps such sums in float32, as LayerNorm does)."""
    return x.astype(backend.host.float32) if x.dtype.itemsize < 4 else x


PIECE = 1 << 16
"""Elements per piece in ``in_pieces``: 256 KiB of float32, so that a chain's few
temporaries stay in a core's L2 cache (2 MiB on the machine the benchmarks ran on)."""


def in_pieces(fn, *arrays):
    """``fn(*arrays)`` for an elementwise ``fn`` of arrays of one shape that returns an
    array or a tuple of arrays of that shape, computed on the CPU piece by piece over
    the flattened arrays. A chain of many NumPy operations (the exact GELU's is about
    25) then streams each element through the L2 cache once, instead of through main
    memory once per operation: 2.4x faster. On a GPU, or when the arrays are small,
    ``fn`` sees them whole."""
    size = arrays[0].size
    if backend.device_of(arrays[0]) != "cpu" or size <= PIECE:
        return fn(*arrays)
    xp = backend.get_array_module(arrays[0])
    flat = [a.reshape(-1) for a in arrays]
    results = None
    for start in range(0, size, PIECE):
        parts = fn(*(a[start:start + PIECE] for a in flat))
        parts = parts if isinstance(parts, tuple) else (parts,)
        if results is None:
            results = [xp.empty(size, part.dtype) for part in parts]
        for whole, part in zip(results, parts):
            whole[start:start + PIECE] = part
    results = tuple(whole.reshape(arrays[0].shape) for whole in results)
    return results[0] if len(results) == 1 else results


def row_blocks(x):
    """Views of x (..., n) as blocks of whole rows, about PIECE elements each, for
    row-wise work in place while a block sits in the cache. On a GPU, or when x is small
    or not contiguous (its reshape would be a copy), x itself is the one block."""
    if (backend.device_of(x) != "cpu" or x.size <= PIECE or x.ndim < 2
            or not x.flags.c_contiguous):
        yield x
        return
    rows = x.reshape(-1, x.shape[-1])
    for block in row_slices(rows):
        yield rows[block]


def row_slices(x):
    """Slices that cover the rows of a 2-D x in blocks of about PIECE elements, for
    row-wise work while a block sits in the cache; on a GPU, one slice of all rows."""
    n, width = x.shape
    step = max(1, PIECE // max(width, 1)) if backend.device_of(x) == "cpu" else max(n, 1)
    return [slice(start, start + step) for start in range(0, n, step)]


def softmax_rows_(scores):
    """Softmax over the last axis of float ``scores``, in place, block by block
    (``row_blocks``): its five passes then read main memory once. A row that is all -inf
    (a query with nothing to attend to) becomes all zeros, not NaN."""
    xp = backend.get_array_module(scores)
    for rows in row_blocks(scores):
        top = rows.max(axis=-1, keepdims=True)
        top[top == -xp.inf] = 0  # a fully masked row: exp(-inf - 0) = 0 rather than NaN
        rows -= top
        xp.exp(rows, out=rows)
        total = rows.sum(axis=-1, keepdims=True)
        total[total == 0] = 1  # ... and its weights stay 0
        rows /= total
    return scores
