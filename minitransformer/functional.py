"""Neural-network functions, each one graph node with a hand-derived backward pass.

Composing softmax from ``exp``, ``sum`` and ``div`` would work (the tests do exactly
that, to prove these equal), but every primitive is a node that saves its inputs and
walks its own backward. Fusing a whole function into one ``Function`` saves memory and
Python overhead, and puts the derivation where a reader can check it in one screen.

Shapes follow the house conventions: batch first, features last, attention scores
``(..., Lq, Lk)``; a boolean mask is True where a query may attend to a key.
"""
import math

from . import backend
from .autograd import Function, Tensor
from .ops.arithmetic import unbroadcast


def _needs_grad(fn):
    """For each input of ``fn``: does backward have to compute its gradient?"""
    return [t.requires_grad for t in fn.inputs]


def _device_array(value, like, what):
    """``value`` (a Tensor, array or nested list) as an array on the device of ``like``."""
    data = value.data if isinstance(value, Tensor) else value
    if not backend.is_array(data):
        data = backend.host.asarray(data)
    return backend.to_device(data, like.device)


def _integer_array(value, like, what):
    data = _device_array(value, like, what)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array (token ids or class indices), "
                        f"got dtype {data.dtype}")
    return data


# ---- softmax and log-softmax ---------------------------------------------------------

class Softmax(Function):
    """y = exp(x - max) / sum(exp(x - max)) along ``axis``; any shape.
    From dy_i = y_i (dx_i - sum_j y_j dx_j):  dx = y * (g - sum(g * y))."""
    def forward(self, x, axis):
        self.axis = axis
        y = x - x.max(axis=axis, keepdims=True)  # shifting by the max keeps exp finite
        self.xp.exp(y, out=y)
        y /= y.sum(axis=axis, keepdims=True)
        self.y = y
        return y

    def backward(self, grad):
        gx = grad * self.y
        gx -= self.y * gx.sum(axis=self.axis, keepdims=True)
        return gx


class LogSoftmax(Function):
    """y = x - max - log(sum(exp(x - max))) along ``axis``; any shape.
    From dy_i = dx_i - sum_j softmax_j dx_j:  dx = g - softmax * sum(g)."""
    def forward(self, x, axis):
        self.axis = axis
        y = x - x.max(axis=axis, keepdims=True)
        y -= self.xp.log(self.xp.exp(y).sum(axis=axis, keepdims=True))
        self.y = y
        return y

    def backward(self, grad):
        return grad - self.xp.exp(self.y) * grad.sum(axis=self.axis, keepdims=True)


def softmax(x, axis=-1):
    """Softmax along ``axis``; rows sum to 1. Stable for large logits (shifted by the max)."""
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed without forming softmax (stable)."""
    return LogSoftmax.apply(x, axis=axis)


# ---- activations ---------------------------------------------------------------------

class ReLU(Function):
    """max(x, 0); any shape. d/dx = 1 where x > 0, else 0 (0 at the kink, like PyTorch)."""
    def forward(self, x):
        self.positive = x > 0
        return self.xp.maximum(x, 0)

    def backward(self, grad):
        return grad * self.positive


def relu(x):
    return ReLU.apply(x)


# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23
# (1969), as in his CALERF routine: three rational fits, each good to about 1e-16.
_ERF_SMALL_P = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
                3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_SMALL_Q = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
                2.84423683343917062e03)
_ERFC_MID_P = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
               2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
               2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERFC_MID_Q = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
               1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
               3.43936767414372164e03, 1.23033935480374942e03)
_ERFC_TAIL_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
                1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERFC_TAIL_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
                6.05183413124413191e-2, 2.33520497626869185e-3)


def _cody_ratio(t, p, q):
    """Cody's rational function in ``t``: p[-1] leads the numerator, 1 the denominator."""
    num, den = p[-1] * t, t
    for a, b in zip(p[:-2], q[:-1]):
        num = (num + a) * t
        den = (den + b) * t
    return (num + p[-2]) / (den + q[-1])


def erf(x):
    """The error function of a float array (NumPy has none), elementwise: Cody's rational
    approximations, accurate to float64 rounding (~1e-16) and so to float32's too.
    Each of the three ranges of |x| is evaluated only on its own elements."""
    xp = backend.get_array_module(x)
    out = xp.empty_like(x)
    a = xp.abs(x)
    small = a <= 0.46875
    xs = x[small]
    out[small] = xs * _cody_ratio(xs * xs, _ERF_SMALL_P, _ERF_SMALL_Q)
    # Elsewhere erf = sign(x) (1 - erfc|x|), with erfc(y) = exp(-y^2) R(y).
    mid = ~small & (a <= 4)
    y = a[mid]
    out[mid] = 1 - xp.exp(-y * y) * _cody_ratio(y, _ERFC_MID_P, _ERFC_MID_Q)
    tail = a > 4
    y = a[tail]
    inv_sq = 1 / (y * y)
    r = (1 / math.sqrt(math.pi) - inv_sq * _cody_ratio(inv_sq, _ERFC_TAIL_P, _ERFC_TAIL_Q)) / y
    out[tail] = 1 - xp.exp(-y * y) * r
    far = ~small
    out[far] = xp.copysign(out[far], x[far])
    return out


class GELU(Function):
    """x Phi(x), Phi the standard normal CDF; any shape. d/dx = Phi(x) + x phi(x), phi the
    normal density. approximate="tanh": Phi(x) ~ (1 + tanh(u)) / 2 with
    u = sqrt(2/pi) (x + 0.044715 x^3), differentiated through tanh."""
    def forward(self, x, approximate):
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            self.t = self.xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1 + self.t)
        # the same formula as PyTorch, so the two agree to the last bits
        self.cdf = 0.5 * (1 + erf(x * (1 / math.sqrt(2))))
        return x * self.cdf

    def backward(self, grad):
        x = self.x
        if self.approximate == "tanh":
            du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x * x)
            return grad * (0.5 * (1 + self.t) + 0.5 * x * (1 - self.t * self.t) * du)
        pdf = self.xp.exp(-0.5 * x * x)
        pdf *= x * (1 / math.sqrt(2 * math.pi))
        pdf += self.cdf
        return grad * pdf


def gelu(x, approximate="none"):
    """Gaussian error linear unit; ``approximate="tanh"`` is the GPT-2 approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate=approximate)


# ---- dropout -------------------------------------------------------------------------

class Dropout(Function):
    """x * keep, keep = bernoulli(1 - p) / (1 - p); any shape. d/dx = keep."""
    def forward(self, x, p):
        draw = backend.rng(backend.device_of(x)).random(x.shape, dtype=backend.DEFAULT_DTYPE)
        self.keep = (draw >= p).astype(x.dtype)
        self.keep *= 1 / (1 - p)  # inverted dropout: the expected value stays x
        return x * self.keep

    def backward(self, grad):
        return grad * self.keep


def dropout(x, p, training):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p) while
    ``training``; the identity (``x`` itself) otherwise or when p == 0."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=p)


# ---- linear and embedding ------------------------------------------------------------

class Linear(Function):
    """x @ weight.T + bias: x (..., in), weight (out, in), bias (out,) -> (..., out).
    From dy = dx W^T + x dW^T: dx = g W, dW = g^T x, db = sum of g over the leading dims,
    as 2-D matmuls over the flattened leading dims."""
    def forward(self, x, weight, bias=None):
        self.x2 = x.reshape(-1, x.shape[-1])
        self.weight, self.x_shape = weight, x.shape
        out = self.x2 @ weight.T
        if bias is not None:
            out += bias
        return out.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        needs = _needs_grad(self)
        g2 = grad.reshape(-1, grad.shape[-1])
        gx = (g2 @ self.weight).reshape(self.x_shape) if needs[0] else None
        gw = g2.T @ self.x2 if needs[1] else None
        return (gx, gw, g2.sum(axis=0)) if len(needs) == 3 else (gx, gw)


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias. x: (..., in_features); weight: (out_features, in_features),
    as in PyTorch; bias: (out_features,) or None. Returns (..., out_features)."""
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), "
                         f"got shape {weight.shape}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x has shape {x.shape}, expected last dim "
                         f"in_features={weight.shape[1]} (weight is {weight.shape})")
    if bias is None:
        return Linear.apply(x, weight)
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias has shape {bias.shape}, expected "
                         f"({weight.shape[0]},) for weight {weight.shape}")
    return Linear.apply(x, weight, bias)


class Embedding(Function):
    """weight[ids]: ids integers (any shape), weight (V, D) -> (*ids.shape, D).
    Row v of dW is the sum of the output gradients at every position holding id v."""
    def forward(self, weight, ids):
        self.ids, self.vocab = ids, weight.shape[0]
        return weight.take(ids, axis=0)

    def backward(self, grad):
        # Scatter-add with repeated ids. One bincount over (row, column) pairs of the
        # distinct ids beats add.at several times over (2 ms against 8 ms for V=4000,
        # D=256, 2048 ids on a laptop core); bincount accumulates in float64.
        xp = self.xp
        dim = grad.shape[-1]
        rows, slot = xp.unique(self.ids, return_inverse=True)
        flat = (slot.reshape(-1, 1) * dim + xp.arange(dim)).reshape(-1)
        sums = xp.bincount(flat, weights=grad.reshape(-1), minlength=rows.size * dim)
        gw = xp.zeros((self.vocab, dim), dtype=grad.dtype)
        gw[rows] = sums.reshape(rows.size, dim)
        return gw


def embedding(ids, weight):
    """Look up rows of ``weight`` (V, D) for integer ``ids`` (any shape; a Tensor, array or
    list; not differentiated) -> (*ids.shape, D)."""
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (vocab_size, dim), "
                         f"got shape {weight.shape}")
    ids = _integer_array(ids, weight, "embedding: ids")
    vocab = weight.shape[0]
    if ids.size:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab:
            raise ValueError(f"embedding: id {low if low < 0 else high} is out of range "
                             f"for a vocabulary of {vocab}; ids must be in [0, {vocab})")
    return Embedding.apply(weight, ids=ids)


# ---- layer normalisation -------------------------------------------------------------

class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis: x (..., D),
    weight and bias (D,) or absent. With xhat the normalised x and gh = g * weight,
    differentiating mean and var gives dx = (gh - mean(gh) - xhat mean(gh xhat)) / std."""
    def forward(self, x, weight=None, bias=None, eps=1e-5):
        xhat = x - x.mean(axis=-1, keepdims=True)
        var = (xhat * xhat).mean(axis=-1, keepdims=True)
        self.inv_std = 1 / self.xp.sqrt(var + eps)
        xhat *= self.inv_std
        self.xhat, self.weight = xhat, weight
        out = xhat if weight is None else xhat * weight
        if bias is not None:  # there is a weight then (layer_norm sees to it): out is fresh
            out += bias
        return out

    def backward(self, grad):
        needs = _needs_grad(self) + [False, False]  # weight and bias may be absent
        xhat = self.xhat
        gh = grad if self.weight is None else grad * self.weight
        gx = None
        if needs[0]:
            gx = gh - gh.mean(axis=-1, keepdims=True)
            gx -= xhat * (gh * xhat).mean(axis=-1, keepdims=True)
            gx *= self.inv_std
        g2 = grad.reshape(-1, grad.shape[-1])
        gw = (g2 * xhat.reshape(g2.shape)).sum(axis=0) if needs[1] else None
        gb = g2.sum(axis=0) if needs[2] else None
        return gx, gw, gb


def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise the last axis of x (..., D) to mean 0 and variance 1 (biased, as in
    PyTorch), then scale by ``weight`` and shift by ``bias``, each (D,) or None."""
    dim = x.shape[-1] if x.ndim else None
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (dim,):
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected ({dim},) "
                             f"for x of shape {x.shape}")
    if weight is None and bias is not None:
        weight = Tensor(x.xp.ones_like(bias.data))  # keeps the inputs in (x, w, b) order
    inputs = [t for t in (x, weight, bias) if t is not None]
    return LayerNorm.apply(*inputs, eps=eps)


# ---- attention -----------------------------------------------------------------------

class ScaledDotProductAttention(Function):
    """softmax(q k^T s + mask) v with s = 1/sqrt(Dk): q (..., Lq, Dk), k (..., Lk, Dk),
    v (..., Lk, Dv) -> (..., Lq, Dv); leading dims broadcast. With P the attention
    weights, A = P * keep after dropout and O = A v, the chain rule through the matmuls
    and the softmax (see Softmax) gives dV = A^T dO, dP = (dO V^T) * keep,
    dS = P * (dP - rowsum(dP * P)), dQ = s dS K, dK = s dS^T Q."""
    def forward(self, q, k, v, mask, dropout_p, weights_out):
        xp = self.xp
        self.scale = 1 / math.sqrt(q.shape[-1])
        scores = q @ k.swapaxes(-1, -2)
        scores *= self.scale
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
        attended = probs
        if dropout_p:
            draw = backend.rng(backend.device_of(q)).random(probs.shape,
                                                            dtype=backend.DEFAULT_DTYPE)
            self.keep = (draw >= dropout_p).astype(probs.dtype)
            self.keep *= 1 / (1 - dropout_p)
            attended = probs * self.keep
        self.q, self.k, self.v, self.probs = q, k, v, probs
        self.out = attended @ v
        return self.out

    def backward(self, grad):
        needs_q, needs_k, needs_v = _needs_grad(self)
        q, k, v, probs, keep = self.q, self.k, self.v, self.probs, self.keep
        gv = None
        if needs_v:
            attended = probs if keep is None else probs * keep
            gv = unbroadcast(attended.swapaxes(-1, -2) @ grad, v.shape)
        if not (needs_q or needs_k):
            return None, None, gv
        gs = grad @ v.swapaxes(-1, -2)  # dP, then dS in place
        if keep is not None:
            gs *= keep
        # rowsum(dP * P) = rowsum(dO * O) (FlashAttention's identity): an (Lq, Dv)
        # product instead of an (Lq, Lk) one.
        gs -= (grad * self.out).sum(axis=-1, keepdims=True)
        gs *= probs
        gs *= self.scale
        gq = unbroadcast(gs @ k, q.shape) if needs_q else None
        gk = unbroadcast(gs.swapaxes(-1, -2) @ q, k.shape) if needs_k else None
        return gq, gk, gv


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, training=True):
    """Attention of queries q (..., Lq, Dk) over keys k (..., Lk, Dk) and values
    v (..., Lk, Dv), scaled by 1/sqrt(Dk); leading dims broadcast, e.g. (B, H).

    ``mask``: boolean, True = may attend (as in torch.nn.functional's
    scaled_dot_product_attention; torch.nn.MultiheadAttention uses the opposite),
    broadcastable to (..., Lq, Lk). A query with no key to attend to gets all-zero
    weights and output. Dropout with ``dropout_p`` is applied to the weights while
    ``training``.

    Returns ``(output, weights)``: output (..., Lq, Dv) is differentiable; weights
    (..., Lq, Lk) are the softmax probabilities before dropout, a Tensor without a
    graph (for inspection and plots; gradients flow through ``output`` only).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim < 2:
            raise ValueError(f"scaled_dot_product_attention: {name} must have at least 2 "
                             f"dims (..., length, dim), got shape {t.shape}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: k has last dim {k.shape[-1]}, "
                         f"expected {q.shape[-1]} like q (q {q.shape}, k {k.shape})")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: v has {v.shape[-2]} positions, "
                         f"expected {k.shape[-2]} like k (k {k.shape}, v {v.shape})")
    try:
        batch = backend.host.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: leading dims of q {q.shape}, "
                         f"k {k.shape} and v {v.shape} do not broadcast") from None
    if not 0 <= dropout_p < 1:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), "
                         f"got {dropout_p}")
    if mask is not None:
        mask = _device_array(mask, q, "mask")
        scores_shape = batch + (q.shape[-2], k.shape[-2])
        if mask.dtype != bool:
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean (True = "
                            f"may attend), got dtype {mask.dtype}")
        try:
            fits = backend.host.broadcast_shapes(mask.shape, scores_shape) == scores_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"scaled_dot_product_attention: mask has shape {mask.shape}, "
                             f"expected one broadcastable to (..., Lq, Lk) = {scores_shape}")
    weights = []
    out = ScaledDotProductAttention.apply(q, k, v, mask=mask, weights_out=weights,
                                          dropout_p=dropout_p if training else 0.0)
    return out, Tensor(weights[0])


# ---- cross-entropy -------------------------------------------------------------------

class CrossEntropy(Function):
    """Mean over counted positions of -sum_c y_c log softmax(z)_c, the target
    distribution y = (1 - smoothing) onehot(target) + smoothing / C: logits (..., C),
    targets (...). Since sum_c y_c = 1, d/dz = softmax(z) - y; divided by the count,
    zero at ignored positions."""
    def forward(self, logits, targets, counted, smoothing):
        xp = self.xp
        self.shape = logits.shape
        z = logits.reshape(-1, logits.shape[-1])
        rows = xp.arange(z.shape[0])
        shifted = z - z.max(axis=1, keepdims=True)
        picked = shifted[rows, targets]
        mean_shifted = shifted.mean(axis=1) if smoothing else 0
        probs = xp.exp(shifted, out=shifted)
        total = probs.sum(axis=1)
        probs /= total[:, None]
        log_total = xp.log(total)
        # -log softmax = log_total - shifted, at the target and averaged over classes
        losses = (1 - smoothing) * (log_total - picked) + smoothing * (log_total - mean_shifted)
        self.count = z.shape[0] if counted is None else int(counted.sum())
        if counted is not None:
            losses *= counted
        self.rows, self.targets, self.counted = rows, targets, counted
        self.probs, self.smoothing = probs, smoothing
        return xp.asarray(losses.sum() / max(self.count, 1), dtype=logits.dtype)

    def backward(self, grad):
        # backward runs once per graph (the engine frees it), so probs can be overwritten
        gz = self.probs
        gz[self.rows, self.targets] -= 1 - self.smoothing
        if self.smoothing:
            gz -= self.smoothing / gz.shape[1]
        if self.counted is not None:
            gz *= self.counted[:, None]
        gz *= grad / max(self.count, 1)
        return gz.reshape(self.shape)


def cross_entropy(logits, targets, ignore_index=None, label_smoothing=0.0):
    """Mean cross-entropy of ``logits`` (N, C) or (B, L, C) -- classes last, unlike
    PyTorch's (B, C, L) -- against integer ``targets`` (N,) or (B, L).

    Exactly ``torch.nn.functional.cross_entropy`` otherwise: positions whose target is
    ``ignore_index`` are left out of the sum and of the count; with ``label_smoothing``
    e, the target is (1 - e) one-hot + e / C. When every position is ignored the loss
    is 0 with zero gradient (PyTorch returns NaN).
    """
    if logits.ndim < 2:
        raise ValueError(f"cross_entropy: logits must be (N, C) or (B, L, C), "
                         f"got shape {logits.shape}")
    targets = _integer_array(targets, logits, "cross_entropy: targets")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets have shape {targets.shape}, expected "
                         f"{logits.shape[:-1]} for logits of shape {logits.shape}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], "
                         f"got {label_smoothing}")
    targets = targets.reshape(-1)
    counted = None
    if ignore_index is not None:
        counted = targets != ignore_index
        targets = targets * counted  # ignored rows point at class 0, masked out later
    classes = logits.shape[-1]
    if targets.size and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        bad = int(targets.min()) if int(targets.min()) < 0 else int(targets.max())
        raise ValueError(f"cross_entropy: target {bad} is out of range for {classes} "
                         f"classes; targets must be in [0, {classes})"
                         + ("" if ignore_index is None else f" or be {ignore_index}"))
    return CrossEntropy.apply(logits, targets=targets, counted=counted,
                              smoothing=label_smoothing)
