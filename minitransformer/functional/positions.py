"""Rotary position embedding (RoPE, Su et al. 2021): positions enter attention by
rotating each query and key, not by adding a vector to the token embedding."""
from .. import arguments
from ..autograd import Function, Tensor
from .common import floating, indices


class RotaryEmbedding(Function):
    """Rotate pairs (x1_i, x2_i), x1 and x2 the first and second halves of the last axis
    (the GPT-NeoX/LLaMA layout), by the angle p theta_i: out1 = x1 cos - x2 sin,
    out2 = x2 cos + x1 sin. x (..., L, d), angles (..., L, d/2) -> (..., L, d).
    A rotation is orthogonal, so the gradient is the output gradient rotated back by
    -p theta_i: dx1 = g1 cos + g2 sin, dx2 = g2 cos - g1 sin."""
    def forward(self, x, angles):
        self.cos, self.sin = (f(angles).astype(x.dtype) for f in (self.xp.cos, self.xp.sin))
        return self._rotate(x, self.sin)

    def backward(self, grad):
        return self._rotate(grad, -self.sin)

    def _rotate(self, x, sin):
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return self.xp.concatenate([x1 * self.cos - x2 * sin, x2 * self.cos + x1 * sin], axis=-1)


def rotary_embedding(x, positions, base=10000.0):
    """RoPE: x (..., L, d) with d even, integer ``positions`` >= 0, (L,) or broadcastable
    to x.shape[:-1] -> (..., L, d). Pair i turns by positions * theta_i with
    theta_i = base^(-2i/d), i < d/2, so that a query at position m and a key at n
    meet in a dot product that depends on m - n only: (R_m q).(R_n k) = q.(R_{n-m} k).
    With a KV cache, give new tokens the positions after the cached ones."""
    if not isinstance(x, Tensor):
        raise TypeError(f"rotary_embedding: x must be a Tensor, got {type(x).__name__}; "
                        "wrap it with mt.tensor(x)")
    floating("rotary_embedding", x=x)  # integers would round cos and sin to 0 and 1
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ValueError(f"rotary_embedding: x must be (..., L, d) with an even d, got "
                         f"shape {x.shape}; give each head an even size")
    base = arguments.positive_number("rotary_embedding", "base", base)
    positions = indices(positions, x, None, "rotary_embedding: positions")
    arguments.broadcastable("rotary_embedding", "positions", positions.shape, x.shape[:-1],
                            "x's (..., L)")
    xp, d = x.xp, x.shape[-1]
    theta = base ** (-xp.arange(0, d, 2, dtype=xp.float64) / d)  # float64: exact angles
    return RotaryEmbedding.apply(x, angles=positions[..., None] * theta)
