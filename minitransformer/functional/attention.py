"""Scaled dot-product attention as one fused node."""
import math

from .. import backend
from ..autograd import Function, Tensor
from ..ops.arithmetic import unbroadcast
from .common import array_like, floating, keep_mask


class ScaledDotProductAttention(Function):
    """softmax(s q k^T, masked) v with s = 1/sqrt(Dk): q (..., Lq, Dk), k (..., Lk, Dk),
    v (..., Lk, Dv) -> (..., Lq, Dv); leading dims broadcast. With P the weights,
    A = P * keep after dropout and O = A v, the chain rule through the two matmuls and
    the softmax (see Softmax) gives dV = A^T dO, dP = (dO V^T) * keep,
    dS = P (dP - rowsum(dP P)), dQ = s dS K, dK = s dS^T Q."""
    def forward(self, q, k, v, mask, dropout_p, weights_out):
        xp = self.xp
        self.scale = 1 / math.sqrt(q.shape[-1])
        self.q_scaled = q * self.scale  # cheaper than scaling the (Lq, Lk) scores
        scores = self.q_scaled @ k.swapaxes(-1, -2)
        if mask is not None:
            xp.copyto(scores, -xp.inf, where=~mask)
        top = scores.max(axis=-1, keepdims=True)
        top[top == -xp.inf] = 0  # a fully masked row: exp(-inf - 0) = 0 rather than NaN
        scores -= top
        probs = xp.exp(scores, out=scores)
        total = probs.sum(axis=-1, keepdims=True)
        total[total == 0] = 1  # ... and its weights stay 0, so its output is 0
        probs /= total
        weights_out.append(probs)  # Function.apply returns one tensor; weights leave here
        self.keep = None
        if dropout_p:
            self.keep = keep_mask(probs.shape, dropout_p, probs.dtype, backend.device_of(q))
        self.k, self.v, self.probs = k, v, probs
        self.out = (probs if self.keep is None else probs * self.keep) @ v
        return self.out

    def backward(self, grad):
        needs_q, needs_k, needs_v = self.needs_input_grad
        k, v, probs, keep = self.k, self.v, self.probs, self.keep
        gv = None
        if needs_v:
            attended = probs if keep is None else probs * keep
            gv = unbroadcast(attended.swapaxes(-1, -2) @ grad, v.shape)
        if not (needs_q or needs_k):
            return None, None, gv
        gs = grad @ v.swapaxes(-1, -2)  # dP, then dS in place
        if keep is not None:
            gs *= keep
        # rowsum(dP P) = rowsum(dO O) (as in FlashAttention): an (Lq, Dv) product
        # instead of an (Lq, Lk) one.
        gs -= (grad * self.out).sum(axis=-1, keepdims=True)
        gs *= probs
        gq = gk = None
        if needs_q:
            gq = gs @ k
            gq *= self.scale
            gq = unbroadcast(gq, self.q_scaled.shape)
        if needs_k:
            gk = unbroadcast(gs.swapaxes(-1, -2) @ self.q_scaled, k.shape)
        return gq, gk, gv


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, training=True):
    """Attention of queries q (..., Lq, Dk) over keys k (..., Lk, Dk) with values
    v (..., Lk, Dv), scores scaled by 1/sqrt(Dk); leading dims broadcast, e.g. (B, H).

    ``mask``: boolean, True = may attend (as in torch.nn.functional's
    scaled_dot_product_attention; torch.nn.MultiheadAttention uses the opposite),
    broadcastable to (..., Lq, Lk). A query with no key to attend to gets all-zero
    weights and output. While ``training``, dropout with ``dropout_p`` acts on the weights.

    Returns ``(output, weights)``: output (..., Lq, Dv) is differentiable; weights
    (..., Lq, Lk) are the softmax probabilities before dropout, a Tensor outside the
    graph (for inspection and plots: gradients flow through ``output`` only).
    """
    name = "scaled_dot_product_attention"
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim < 2:
            raise ValueError(f"{name}: {arg} must have at least 2 dims (..., length, dim), "
                             f"got shape {t.shape}")
    floating(name, q=q, k=k, v=v)
    if k.shape[-2] == 0:
        raise ValueError(f"{name}: k has 0 positions (shape {k.shape}); attention needs at "
                         "least one key (mask keys out instead of removing them all)")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"{name}: k has last dim {k.shape[-1]}, expected "
                         f"{q.shape[-1]} like q (q {q.shape}, k {k.shape})")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"{name}: v has {v.shape[-2]} positions, expected "
                         f"{k.shape[-2]} like k (k {k.shape}, v {v.shape})")
    try:
        batch = backend.host.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"{name}: the leading dims of q {q.shape}, k {k.shape} and "
                         f"v {v.shape} do not broadcast") from None
    if not 0 <= dropout_p < 1:
        raise ValueError(f"{name}: dropout_p must be in [0, 1), got {dropout_p}")
    if mask is not None:
        mask = array_like(mask, q)
        scores = batch + (q.shape[-2], k.shape[-2])
        if mask.dtype != bool:
            raise TypeError(f"{name}: mask must be boolean (True = may attend), "
                            f"got dtype {mask.dtype}")
        if mask.ndim > len(scores) or any(m not in (1, n) for m, n in
                                          zip(mask.shape[::-1], scores[::-1])):
            raise ValueError(f"{name}: mask has shape {mask.shape}, expected one that "
                             f"broadcasts to the scores' (..., Lq, Lk) = {scores}")
    weights = []
    out = ScaledDotProductAttention.apply(q, k, v, mask=mask, weights_out=weights,
                                          dropout_p=dropout_p if training else 0.0)
    return out, Tensor(weights[0])
