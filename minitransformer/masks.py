"""Attention masks: which keys each query may attend to; and ALiBi's distance bias.

Every mask here is a boolean backend array (NumPy or CuPy, not a Tensor: masks are not
differentiated) in which **True means "may attend"**, shaped to broadcast against
attention scores (B, H, Lq, Lk). That is the convention of
``torch.nn.functional.scaled_dot_product_attention``; ``torch.nn.MultiheadAttention``'s
boolean masks mean the opposite (True = blocked), a classic source of silent bugs.
Combine masks with ``combine_masks`` (or ``&``); invert one with ``~``.

``alibi_bias`` is no mask but an additive float bias for the scores (``bias=`` of
``scaled_dot_product_attention``), also fixed, also aligned to the end of the keys.
"""
from numbers import Integral

from . import arguments, backend
from .autograd import as_array


def padding_mask(ids, pad_id):
    """Keys that are real tokens: ids (B, L) integers -> (B, 1, 1, L), False at ``pad_id``.

    ``ids`` may be a Tensor, an array or a nested list; the mask is on its device."""
    ids = as_array(ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"padding_mask: ids must be a 2-D integer array (B, L), got shape "
                         f"{ids.shape} and dtype {ids.dtype}")
    if not isinstance(pad_id, Integral):
        raise TypeError(f"padding_mask: pad_id must be an int, got {pad_id!r}")
    return (ids != pad_id)[:, None, None, :]


def check_lengths(owner, q_len, k_len):
    """q_len and k_len positive ints with q_len <= k_len: the queries are the last q_len
    of k_len positions."""
    for name, n in (("q_len", q_len), ("k_len", k_len)):
        if not isinstance(n, Integral) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {n!r}")
    if q_len > k_len:
        raise ValueError(f"{owner}: q_len={q_len} exceeds k_len={k_len}; the queries "
                         "must be the last q_len of the k_len positions")


def causal_mask(q_len, k_len=None, device=None):
    """Each query may attend to its own and earlier positions: (1, 1, q_len, k_len).

    The queries are the last ``q_len`` of ``k_len`` positions (default ``k_len = q_len``):
    with a cache of earlier keys during incremental decoding, query i sits at position
    k_len - q_len + i and sees keys 0 .. k_len - q_len + i. ``device``: "cpu" or "gpu"
    (default: the current backend's)."""
    k_len = q_len if k_len is None else k_len
    check_lengths("causal_mask", q_len, k_len)
    xp = backend.xp(device)
    allowed = xp.tri(int(q_len), int(k_len), k=int(k_len - q_len), dtype=bool)
    return allowed[None, None]


def alibi_slopes(num_heads):
    """ALiBi's per-head slopes (Press et al., 2022): for H a power of two the geometric
    sequence 2^(-8/H), 2^(-16/H), ..., 2^(-8); otherwise those of the nearest smaller
    power of two, n, followed by every other slope of 2n, as the paper's code does."""
    num_heads = arguments.positive_integer("alibi_slopes", "num_heads", num_heads)
    n = 2 ** (num_heads.bit_length() - 1)  # the largest power of two <= num_heads
    slopes = [2 ** (-8 * (h + 1) / n) for h in range(n)]
    return slopes + [2 ** (-8 * (h + 1) / (2 * n)) for h in range(0, 2 * n, 2)][:num_heads - n]


def alibi_bias(num_heads, q_len, k_len=None, device=None, dtype=None):
    """-slope_h * |i - j| for query position i and key position j: float (1, H, q_len,
    k_len) in ``dtype`` (default float32; a float64 model wants float64, as most slopes
    are not powers of two). Like ``causal_mask``, the queries are the last q_len of
    k_len positions (default k_len = q_len), so a KV cache needs no special case."""
    k_len = q_len if k_len is None else k_len
    check_lengths("alibi_bias", q_len, k_len)
    xp = backend.xp(device)
    dtype = backend.DEFAULT_DTYPE if dtype is None else dtype
    queries = xp.arange(k_len - q_len, k_len)[:, None]
    distance = xp.abs(queries - xp.arange(k_len)[None, :]).astype(dtype)
    slopes = xp.asarray(alibi_slopes(num_heads), dtype=dtype)
    return (-slopes[:, None, None] * distance)[None]


def combine_masks(*masks):
    """The logical and of ``masks`` (each boolean, True = may attend), broadcast together.
    ``None`` entries mean "no restriction" and are skipped; all None gives None."""
    arrays = []
    for i, m in enumerate(masks):
        if m is None:
            continue
        m = as_array(m)
        if m.dtype != bool:
            raise TypeError(f"combine_masks: mask {i} has dtype {m.dtype}, expected bool "
                            "(True = may attend)")
        arrays.append(m)
    if not arrays:
        return None
    devices = [backend.device_of(m) for m in arrays]
    if len(set(devices)) > 1:
        other = next(d for d in devices if d != devices[0])
        raise backend.DeviceError(
            f"combine_masks: masks are on {devices[0]!r} and on {other!r}; make them on one "
            f"device, e.g. padding_mask(mt.tensor(ids, device={devices[0]!r}), pad_id), or "
            f"move one with mt.tensor(mask, device={devices[0]!r})")
    try:
        backend.host.broadcast_shapes(*(m.shape for m in arrays))
    except ValueError:
        shapes = ", ".join(str(m.shape) for m in arrays)
        raise ValueError(f"combine_masks: mask shapes {shapes} do not broadcast "
                         "together") from None
    combined = arrays[0]
    for m in arrays[1:]:
        combined = combined & m
    return combined
