"""The basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout and positional
encodings (sinusoidal, learned, and T5's relative position bias).

Each is a thin ``Module`` around one fused function of ``minitransformer.functional``:
the module owns the parameters, the function does the math (forward and backward).

Parameters are drawn on the CPU, from ``backend.rng("cpu")``, and then moved to the
current backend, so ``mt.manual_seed(s)`` gives the same initial weights on NumPy and CuPy.
Arguments are checked once, in the constructor; ``forward`` checks its input, then applies
the function's graph node (``F.layers.Linear``: ``F.linear`` would check the weights again).
"""
import math

from .. import arguments, backend
from .. import functional as F
from ..autograd import Tensor, as_array
from ..masks import check_lengths
from ..ops import where
from .module import Module, Parameter


def _parameter(host_array):
    """A float32 parameter on the current backend, made from a host array."""
    data = host_array.astype(backend.DEFAULT_DTYPE)
    return Parameter(backend.to_device(data, backend.default_device()))


def _uniform(bound, shape):
    return _parameter(backend.rng("cpu").uniform(-bound, bound, shape))


def _normal(std, shape):
    return _parameter(backend.rng("cpu").normal(0.0, std, shape))


def _constant(value, shape):
    return _parameter(backend.host.full(shape, value))


def _sizes(owner, **sizes):
    """The sizes as Python ints, each checked to be a positive integer (NumPy's too)."""
    return [arguments.positive_integer(owner, name, n) for name, n in sizes.items()]


def _check_last_dim(module, x, name, size):
    if x.shape[-1:] != (size,):
        raise ValueError(f"{type(module).__name__}: input has shape {x.shape}, expected "
                         f"last dim {name}={size}")


class Linear(Module):
    """y = x Wᵀ + b. x (..., in_features) -> (..., out_features).

    ``weight`` is (out_features, in_features), as in PyTorch, and both weight and bias
    start as U(-1/sqrt(in_features), 1/sqrt(in_features)), PyTorch's default.
    """

    def __init__(self, in_features, out_features, bias=True):
        in_features, out_features = _sizes("Linear", in_features=in_features,
                                           out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = _uniform(bound, (out_features, in_features))
        self.bias = _uniform(bound, (out_features,)) if bias else None

    def forward(self, x):
        _check_last_dim(self, x, "in_features", self.in_features)
        return F.layers.Linear.apply(*(t for t in (x, self.weight, self.bias) if t is not None))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: integer ids (any shape) -> vectors (*ids.shape, dim).

    ``weight`` is (num_embeddings, dim), drawn from N(0, std²) (PyTorch: std=1). With
    ``padding_idx``, that row starts at zero and receives no gradient, so it stays as it
    is (PyTorch's rule).
    """

    def __init__(self, num_embeddings, dim, padding_idx=None, std=1.0):
        num_embeddings, dim = _sizes("Embedding", num_embeddings=num_embeddings, dim=dim)
        if padding_idx is not None:  # negative counts from the end, as in PyTorch
            padding_idx = arguments.integer("Embedding", "padding_idx", padding_idx,
                                            -num_embeddings, num_embeddings - 1)
            padding_idx %= num_embeddings
        self.num_embeddings, self.dim, self.padding_idx = num_embeddings, dim, padding_idx
        table = backend.rng("cpu").normal(0.0, std, (num_embeddings, dim))
        if padding_idx is not None:
            table[padding_idx] = 0.0
        self.weight = _parameter(table)

    def forward(self, ids):
        ids = F.common.indices(ids, self.weight, self.num_embeddings, "embedding: ids")
        return self.lookup(ids)

    def lookup(self, ids):
        """``forward`` for ids already checked (an integer array on the weight's device,
        in range): the models check their token ids once, at their own entry point."""
        out = F.layers.Embedding.apply(self.weight, ids=ids)
        if self.padding_idx is None:
            return out
        # Put the padding row back as a constant: same values, but no gradient reaches it.
        is_pad = (ids == self.padding_idx)[..., None]
        return where(is_pad, self.weight.data[self.padding_idx], out)

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.dim}{pad}"


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale and shift.
    x (..., dim) -> (..., dim); ``weight`` starts at ones, ``bias`` at zeros (None
    with ``bias=False``)."""

    def __init__(self, dim, eps=1e-5, bias=True):
        dim, = _sizes("LayerNorm", dim=dim)
        self.dim, self.eps = dim, arguments.non_negative_number("LayerNorm", "eps", eps)
        self.weight = _constant(1.0, (dim,))
        self.bias = _constant(0.0, (dim,)) if bias else None

    def forward(self, x):
        _check_last_dim(self, x, "dim", self.dim)
        F.common.floating("layer_norm", x=x)
        return F.layers.LayerNorm.apply(
            *(t for t in (x, self.weight, self.bias) if t is not None), eps=self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class RMSNorm(Module):
    """Divide the last axis by its root mean square, then scale (LLaMA's norm: no mean,
    no bias). x (..., dim) -> (..., dim); ``weight`` starts at ones."""

    def __init__(self, dim, eps=1e-6):
        dim, = _sizes("RMSNorm", dim=dim)
        self.dim, self.eps = dim, arguments.non_negative_number("RMSNorm", "eps", eps)
        self.weight = _constant(1.0, (dim,))

    def forward(self, x):
        _check_last_dim(self, x, "dim", self.dim)
        F.common.floating("rms_norm", x=x)
        return F.norms.RMSNorm.apply(x, self.weight, eps=self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Zero each element with probability ``p`` while training, scaling the rest by
    1/(1-p) (inverted dropout); the identity in eval mode."""

    def __init__(self, p=0.1):
        self.p = arguments.fraction("Dropout", "p", p)

    def forward(self, x):
        return F.activations.Dropout.apply(x, p=self.p) if self.training and self.p else x

    def extra_repr(self):
        return f"p={self.p}"


def _check_positions(owner, x, start, max_len):
    if x.ndim != 3:
        raise ValueError(f"{owner}: input has shape {x.shape}, expected (B, L, D)")
    if start < 0 or start + x.shape[1] > max_len:
        raise ValueError(f"{owner}: positions {start}..{start + x.shape[1] - 1} requested, "
                         f"but max_len={max_len}; build it with a larger max_len")


class SinusoidalPositionalEncoding(Module):
    """Add the fixed sinusoids of "Attention Is All You Need": for position p and pair i,
    PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(p / 10000^(2i/dim)).

    forward(x (B, L, D), start=0) -> x + PE[start:start+L]. ``start`` is the position of
    the first token, for incremental decoding. The table is a buffer: it moves with the
    module but is neither trained nor saved.
    """

    def __init__(self, dim, max_len=5000):
        dim, max_len = _sizes("SinusoidalPositionalEncoding", dim=dim, max_len=max_len)
        host = backend.host
        position = host.arange(max_len)[:, None]
        frequency = host.exp(host.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = host.zeros((max_len, dim))
        table[:, 0::2] = host.sin(position * frequency)
        table[:, 1::2] = host.cos(position * frequency[: dim // 2])
        self.dim, self.max_len = dim, max_len
        self.table = Tensor(backend.to_device(table.astype(backend.DEFAULT_DTYPE),
                                              backend.default_device()))

    def forward(self, x, start=0):
        _check_positions("SinusoidalPositionalEncoding", x, start, self.max_len)
        return x + self.table.data[start:start + x.shape[1]]

    def extra_repr(self):
        return f"{self.dim}, max_len={self.max_len}"


class LearnedPositionalEmbedding(Module):
    """Add a trained vector per position (GPT, BERT). ``weight`` is (max_len, dim).

    forward(x (B, L, D), start=0) -> x + weight[start:start+L].
    """

    def __init__(self, max_len, dim, std=0.02):
        max_len, dim = _sizes("LearnedPositionalEmbedding", max_len=max_len, dim=dim)
        self.max_len, self.dim = max_len, dim
        self.weight = _normal(std, (max_len, dim))

    def forward(self, x, start=0):
        _check_positions("LearnedPositionalEmbedding", x, start, self.max_len)
        positions = backend.xp(self.weight.device).arange(start, start + x.shape[1])
        return x + F.layers.Embedding.apply(self.weight, ids=positions)  # in range: unchecked

    def extra_repr(self):
        return f"{self.max_len}, {self.dim}"


def _exact_buckets(owner, bidirectional, num_buckets, max_distance):
    """How many offsets get a bucket of their own (at least one), checking that the
    logarithmic buckets reach past them to ``max_distance``."""
    num_buckets, max_distance = _sizes(owner, num_buckets=num_buckets, max_distance=max_distance)
    exact = num_buckets // (4 if bidirectional else 2)
    if exact < 1:
        raise ValueError(f"{owner}: num_buckets={num_buckets} leaves no exact bucket; "
                         f"expected num_buckets >= {4 if bidirectional else 2} "
                         f"(bidirectional={bidirectional})")
    if max_distance <= exact:
        raise ValueError(f"{owner}: max_distance={max_distance} must exceed the {exact} "
                         f"offsets that num_buckets={num_buckets} buckets exactly")
    return exact


def relative_position_bucket(relative, bidirectional=True, num_buckets=32, max_distance=128):
    """T5's bucket for each key-minus-query offset in the integer array ``relative``.

    Offsets of n < max_exact positions (a quarter of the buckets if bidirectional, else
    half of them) get a bucket each; larger ones share buckets spaced logarithmically up
    to ``max_distance``, past which they all fall in the last bucket. Bidirectional:
    keys after the query use the upper half of the buckets. Otherwise (causal) a key
    after the query gets bucket 0."""
    owner = "relative_position_bucket"
    max_exact = _exact_buckets(owner, bidirectional, num_buckets, max_distance)
    data = as_array(relative)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{owner}: relative must be integer offsets, got dtype {data.dtype}")
    xp = backend.get_array_module(data)
    distance = -data.astype(xp.int64)  # how far back the key is (int64: -int8(-128) fits)
    bucket = xp.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        bucket += (distance < 0) * num_buckets
        distance = xp.abs(distance)
    else:
        distance = xp.maximum(distance, 0)
    ratio = xp.log(xp.maximum(distance, 1) / max_exact) / math.log(max_distance / max_exact)
    far = max_exact + (ratio * (num_buckets - max_exact)).astype(xp.int64)
    return bucket + xp.where(distance < max_exact, distance, xp.minimum(far, num_buckets - 1))


class RelativePositionBias(Module):
    """T5's learned attention bias: one scalar per head and bucket of the key-minus-query
    offset (``relative_position_bucket``). forward(q_len, k_len=None) -> bias
    (1, H, q_len, k_len) for the scores, the queries being the last q_len of k_len
    positions. ``weight`` is (num_buckets, num_heads). Share one across a stack's layers,
    as T5 does; ``bidirectional=False`` for causal self-attention."""

    def __init__(self, num_heads, num_buckets=32, max_distance=128, bidirectional=True, std=0.02):
        num_heads, = _sizes("RelativePositionBias", num_heads=num_heads)
        _exact_buckets("RelativePositionBias", bidirectional, num_buckets, max_distance)
        num_buckets, max_distance = int(num_buckets), int(max_distance)
        self.num_heads, self.num_buckets = num_heads, num_buckets
        self.max_distance, self.bidirectional = max_distance, bidirectional
        self.weight = _normal(std, (num_buckets, num_heads))

    def forward(self, q_len, k_len=None):
        k_len = q_len if k_len is None else k_len
        check_lengths("RelativePositionBias", q_len, k_len)
        xp = backend.xp(self.weight.device)
        relative = xp.arange(k_len)[None, :] - xp.arange(k_len - q_len, k_len)[:, None]
        buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets,
                                           self.max_distance)
        bias = F.layers.Embedding.apply(self.weight, ids=buckets)  # (Lq, Lk) -> (Lq, Lk, H)
        return bias.transpose(2, 0, 1)[None]  # (1, H, Lq, Lk)

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
                f"max_distance={self.max_distance}, bidirectional={self.bidirectional}")
