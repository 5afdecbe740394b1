"""Scaled dot-product attention as one fused node, with an additive bias and
grouped-query heads."""
import math

from .. import arguments, backend
from ..autograd import Function, Tensor, as_array
from ..ops.arithmetic import unbroadcast
from .common import floating, keep_mask, softmax_rows_, widened


class ScaledDotProductAttention(Function):
    """softmax(s q k^T + bias, masked) v with s = 1/sqrt(Dk): q (..., Lq, Dk),
    k (..., Lk, Dk), v (..., Lk, Dv), bias (..., Lq, Lk) or absent -> (..., Lq, Dv);
    leading dims broadcast; the weights P (..., Lq, Lk) are a second output. With
    A = P * keep after dropout and O = A v, the chain rule through the two matmuls and
    the softmax (see Softmax) gives dV = A^T dO, dP = (dO V^T) * keep (+ the weights'
    own gradient, if they feed the loss), dS = P (dP - rowsum(dP P)), dQ = s dS K,
    dK = s dS^T Q, and dBias = dS, since the bias is added to the scores S."""
    def forward(self, q, k, v, bias=None, mask=None, dropout_p=0.0):
        xp = self.xp
        self.scale = 1 / math.sqrt(q.shape[-1])
        self.q_scaled = q * self.scale  # cheaper than scaling the (Lq, Lk) scores
        scores = widened(self.q_scaled @ k.swapaxes(-1, -2))  # float16: softmax in float32
        if bias is not None:
            scores += bias
            self.bias_shape = bias.shape
        if mask is not None:
            xp.copyto(scores, -xp.inf, where=~mask)
        probs = softmax_rows_(scores)  # a fully masked row gets weights 0, output 0
        self.keep = None
        if dropout_p:
            self.keep = keep_mask(probs.shape, dropout_p, probs.dtype, backend.device_of(q))
        self.k, self.v, self.probs = k, v, probs
        self.out = (probs if self.keep is None else probs * self.keep) @ v
        return self.out.astype(q.dtype, copy=False), probs

    def backward(self, grad, grad_probs):
        if grad is None:  # only the weights feed the loss
            grad = self.xp.zeros_like(self.out)
        grad = grad.astype(self.out.dtype, copy=False)
        needs_q, needs_k, needs_v, needs_bias = (self.needs_input_grad + [False])[:4]
        k, v, probs, keep = self.k, self.v, self.probs, self.keep
        gv = None
        if needs_v:
            attended = probs if keep is None else probs * keep
            gv = unbroadcast(attended.swapaxes(-1, -2) @ grad, v.shape)
        if not (needs_q or needs_k or needs_bias):
            return None, None, gv, None
        gs = grad @ v.swapaxes(-1, -2)  # dP, then dS in place
        if keep is not None:
            gs *= keep
        # rowsum(dP P) = rowsum(dO O) (as in FlashAttention): an (Lq, Dv) product
        # instead of an (Lq, Lk) one.
        gs -= (grad * self.out).sum(axis=-1, keepdims=True)
        if grad_probs is not None:  # None unless the weights feed the loss
            gs += grad_probs - (grad_probs * probs).sum(axis=-1, keepdims=True)
        gs *= probs
        gq = gk = None
        if needs_q:
            gq = gs @ k
            gq *= self.scale
            gq = unbroadcast(gq, self.q_scaled.shape)
        if needs_k:
            gk = unbroadcast(gs.swapaxes(-1, -2) @ self.q_scaled, k.shape)
        gb = unbroadcast(gs, self.bias_shape) if needs_bias else None
        return gq, gk, gv, gb


def _kv_groups(name, q, k, v):
    """How many query heads share each key/value head (grouped-query attention): 1
    unless k and v have H_kv > 1 heads where q has a multiple H of them. Heads are axis
    -3 of (B, H, L, D) inputs only: in (B, L, D) inputs axis -3 is the batch, which must
    broadcast as usual."""
    if q.ndim < 4 or k.ndim < 4 or k.shape[-3] in (1, q.shape[-3]):
        return 1
    heads, kv_heads = q.shape[-3], k.shape[-3]
    if heads % kv_heads or v.ndim < 3 or v.shape[-3] != kv_heads:
        raise ValueError(f"{name}: q has {heads} heads and k {kv_heads} (axis -3); k and v "
                         f"need the same number of heads, dividing q's (q {q.shape}, "
                         f"k {k.shape}, v {v.shape})")
    return heads // kv_heads


def _group_heads(x, groups):
    """(..., H, L, D) -> (..., H_kv, G, L, D) with H = H_kv * G, so query head h lands
    in group h // G; a size-1 head axis becomes (1, 1) and fewer than 3 dims stay."""
    if x is None or x.ndim < 3:
        return x
    if x.shape[-3] == 1:
        return x.reshape(*x.shape[:-2], 1, *x.shape[-2:])
    return x.reshape(*x.shape[:-3], x.shape[-3] // groups, groups, *x.shape[-2:])


def check_attention_arguments(name, q, k, v, mask, bias, dropout_p):
    """Check the arguments of an attention function (``name``) and return
    ``group_heads(q, k, v, mask, bias)`` ready for its Function, the mask as an array
    and the bias as a Tensor."""
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
    groups = _kv_groups(name, q, k, v)
    kv_lead = [t.shape[:-3] + (q.shape[-3],) if groups > 1 else t.shape[:-2] for t in (k, v)]
    try:
        batch = backend.host.broadcast_shapes(q.shape[:-2], *kv_lead)
    except ValueError:
        raise ValueError(f"{name}: the leading dims of q {q.shape}, k {k.shape} and "
                         f"v {v.shape} do not broadcast") from None
    arguments.fraction(name, "dropout_p", dropout_p)
    scores, scores_name = batch + (q.shape[-2], k.shape[-2]), "the scores' (..., Lq, Lk)"
    if mask is not None:
        mask = as_array(mask, q.device)
        if mask.dtype != bool:
            raise TypeError(f"{name}: mask must be boolean (True = may attend), "
                            f"got dtype {mask.dtype}")
        arguments.broadcastable(name, "mask", mask.shape, scores, scores_name)
    return group_heads(q, k, v, mask, check_bias(name, bias, q, scores, scores_name))


def check_bias(name, bias, q, scores, scores_name):
    """``bias`` (None, an array, a Tensor) as a float Tensor on q's device, broadcastable
    to ``scores``; the one check of a bias (``MultiHeadAttention`` calls it too)."""
    if bias is not None:
        if not isinstance(bias, Tensor):
            bias = Tensor(as_array(bias, q.device))
        if bias.device != q.device:  # a learned bias stays where its parameters are
            raise backend.DeviceError(f"{name}: bias is on {bias.device!r} but q is on "
                                      f"{q.device!r}; move one with .to({q.device!r})")
        if bias.dtype.kind != "f":
            raise TypeError(f"{name}: bias must be a float array added to the scores, got "
                            f"dtype {bias.dtype} (a boolean mask goes in mask=)")
        arguments.broadcastable(name, "bias", bias.shape, scores, scores_name)
    return bias


def group_heads(q, k, v, mask, bias):
    """``(q, k, v, mask, bias, groups)``, the head axes split by ``_group_heads`` for GQA."""
    groups = _kv_groups("attention", q, k, v)
    if groups > 1:
        q, k, v = _group_heads(q, groups), _group_heads(k, 1), _group_heads(v, 1)
        mask, bias = _group_heads(mask, groups), _group_heads(bias, groups)
    return q, k, v, mask, bias, groups


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, training=True,
                                 bias=None):
    """Attention of queries q (..., Lq, Dk) over keys k (..., Lk, Dk) with values
    v (..., Lk, Dv), scores scaled by 1/sqrt(Dk); leading dims broadcast, e.g. (B, H).

    ``mask``: boolean, True = may attend (as in torch.nn.functional's
    scaled_dot_product_attention; torch.nn.MultiheadAttention uses the opposite),
    broadcastable to (..., Lq, Lk). A query with no key to attend to gets all-zero
    weights and output. While ``training``, dropout with ``dropout_p`` acts on the weights.
    ``bias``: a float Tensor (differentiable) or array, broadcastable to (..., Lq, Lk),
    added to the scaled scores before the softmax (ALiBi, T5's relative positions; a
    float ``attn_mask`` in PyTorch).

    Grouped-query attention: 4-D k and v (B, H_kv, Lk, D) may have H_kv heads where q
    has H, a multiple; query head h reads key/value head h // (H // H_kv) (PyTorch's
    ``enable_gqa=True``). Multi-query attention is H_kv = 1, plain broadcasting.

    Returns ``(output, weights)``: output (..., Lq, Dv) is differentiable; weights
    (..., Lq, Lk) are the softmax probabilities before dropout, a Tensor outside the
    graph (for inspection and plots: gradients flow through ``output`` only).
    """
    return attention(*check_attention_arguments("scaled_dot_product_attention", q, k, v,
                                                mask, bias, dropout_p),
                     dropout_p if training else 0.0)


def attention(q, k, v, mask, bias, groups, dropout_p):
    """``scaled_dot_product_attention`` without checks, on ``group_heads``' output."""
    out, weights = ScaledDotProductAttention.apply(
        *(t for t in (q, k, v, bias) if t is not None), mask=mask, dropout_p=dropout_p)
    weights = weights.detach()  # for inspection only, and so as not to hold the graph
    if groups > 1:  # (..., H_kv, G, L, D) back to (..., H, L, D)
        out = out.reshape(*out.shape[:-4], -1, *out.shape[-2:])
        weights = weights.reshape(*weights.shape[:-4], -1, *weights.shape[-2:])
    return out, weights
