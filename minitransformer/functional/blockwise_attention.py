"""Blockwise (FlashAttention-style) attention: the same numbers as
``scaled_dot_product_attention`` without ever holding the (Lq, Lk) weights.

Plain attention stores softmax(S) for the backward pass: Lq * Lk numbers per head, the
O(L^2) that limits context length. Here the scores are made one (block x block) tile at
a time, and only the output O (Lq, Dv) and one number per query row, the logsumexp of
its scores, are saved.

Forward: the online softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al.
2022). For one block of query rows, walk the key blocks keeping per row the running
max m, the running sum l = sum exp(s - m) and the unnormalised output acc = sum
exp(s - m) v. A new tile of scores S with values V gives m' = max(m, rowmax S) and

    alpha = exp(m - m'),  P~ = exp(S - m'),  l <- alpha l + rowsum P~,
    acc <- alpha acc + P~ V.

Rescaling by alpha turns the old terms' exp(s - m) into exp(s - m'). After the last
tile O = acc / l, and lse = m + log l is saved: any tile's weights are P = exp(S - lse).

Backward: FlashAttention-2's. The plain gradients (see ``attention``), written per tile
(i: a query block, j: a key block), with D_i = rowsum(dO_i * O_i):

    P_ij = exp(S_ij - lse_i)               (recomputed, exact)
    dV_j += P_ij^T dO_i                    (O_i = sum_j P_ij V_j)
    dP_ij = dO_i V_j^T
    dS_ij = P_ij * (dP_ij - D_i)           (softmax; D_i = rowsum(dP_i * P_i))
    dQ_i += s dS_ij K_j,   dK_j += s dS_ij^T Q_i,   dBias_ij = dS_ij

The softmax gradient needs rowsum(dP * P) over a whole row, i.e. every tile of it;
since O_i = P_i V, that sum equals rowsum(dO_i * O_i), known before the loop, so each
tile's gradient is complete on its own. With dropout (keep multiplier Z), O = (P Z) V:
dV uses P Z, dP_ij = (dO_i V_j^T) Z_ij, and D_i is unchanged; each Z is redrawn by
replaying the random generator from its state at the forward pass.

Masked scores are -inf, so P = 0 there; a row with nothing to attend to has l = 0 and
gets output 0 and lse = +inf (then every P of the row is 0 in the backward pass too).
"""
import contextlib
import math

from .. import arguments, backend
from ..autograd import Function
from ..ops.arithmetic import unbroadcast
from .attention import check_attention_arguments
from .common import keep_mask, widened


def _tiles(lq, lk, block, causal):
    """(query slice, key slice, needs a causal mask) for every tile not entirely above
    the diagonal; queries are aligned to the end of the keys (query r sees key c when
    c <= r + lk - lq)."""
    offset = lk - lq
    for i in range(0, lq, block):
        rows = slice(i, min(i + block, lq))
        for j in range(0, lk, block):
            cols = slice(j, min(j + block, lk))
            if causal and cols.start > rows.stop - 1 + offset:
                break  # this tile and the ones right of it are masked out
            yield rows, cols, causal and cols.stop - 1 > rows.start + offset


class BlockwiseAttention(Function):
    """softmax(s q k^T + bias, masked) v tile by tile; q (..., Lq, Dk), k (..., Lk, Dk),
    v (..., Lk, Dv), bias broadcastable to (..., Lq, Lk) -> (..., Lq, Dv)."""
    def forward(self, q, k, v, bias=None, *, mask, causal, dropout_p, block):
        xp = self.xp
        batch = backend.host.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        lq, lk = q.shape[-2], k.shape[-2]
        self.shapes = q.shape, k.shape, v.shape
        self.scale = 1 / math.sqrt(q.shape[-1])
        self.dtype = q.dtype  # float16 inputs are computed in float32, like the softmax
        q = xp.broadcast_to(widened(q) * self.scale, batch + q.shape[-2:])
        k = xp.broadcast_to(widened(k), batch + k.shape[-2:])
        v = xp.broadcast_to(widened(v), batch + v.shape[-2:])
        if mask is not None:
            mask = xp.broadcast_to(mask, batch + (lq, lk))
        self.bias = bias
        self.mask, self.causal, self.dropout_p, self.block = mask, causal, dropout_p, block
        self.offset = lk - lq
        self.rng_mark = backend.rng_fork(backend.device_of(q)) if dropout_p else None
        out = xp.zeros(batch + (lq, v.shape[-1]), q.dtype)
        top = xp.full(batch + (lq, 1), -xp.inf, q.dtype)  # running max, m
        total = xp.zeros(batch + (lq, 1), q.dtype)         # running sum, l
        for rows, cols, diagonal in _tiles(lq, lk, block, causal):
            s = self._scores(q, k, rows, cols, diagonal)
            new_top = xp.maximum(top[..., rows, :], s.max(axis=-1, keepdims=True))
            shift = xp.where(new_top == -xp.inf, 0, new_top)  # rows with no key yet
            p = xp.exp(s - shift)
            alpha = xp.exp(top[..., rows, :] - shift)
            total[..., rows, :] = alpha * total[..., rows, :] + p.sum(axis=-1, keepdims=True)
            if dropout_p:
                p *= keep_mask(p.shape, dropout_p, p.dtype, backend.device_of(p))
            out[..., rows, :] = alpha * out[..., rows, :] + p @ v[..., cols, :]
            top[..., rows, :] = new_top
        empty = total == 0  # rows that may attend to nothing: output 0, lse +inf
        total[empty] = 1
        out /= total
        self.lse = xp.where(empty, xp.inf, top + xp.log(total))
        self.q, self.k, self.v, self.out = q, k, v, out
        return out.astype(self.dtype, copy=False)

    def _scores(self, q, k, rows, cols, diagonal):
        """One tile of scores s q k^T + bias, -inf where masked: (..., rows, cols)."""
        xp = self.xp
        s = q[..., rows, :] @ k[..., cols, :].swapaxes(-1, -2)
        if self.bias is not None:
            s += self.bias[..., rows if self.bias.shape[-2] > 1 else slice(None),
                           cols if self.bias.shape[-1] > 1 else slice(None)]
        if self.mask is not None:
            s[~self.mask[..., rows, cols]] = -xp.inf
        if diagonal:
            seen = (xp.arange(rows.start, rows.stop)[:, None] + self.offset
                    >= xp.arange(cols.start, cols.stop))
            s[..., ~seen] = -xp.inf
        return s

    def backward(self, grad):
        xp = self.xp
        q, k, v, out = self.q, self.k, self.v, self.out
        grad = grad.astype(out.dtype, copy=False)
        needs_q, needs_k, needs_v, needs_bias = (self.needs_input_grad + [False])[:4]
        gq, gk, gv, gbias = (xp.zeros(x.shape, x.dtype) if needed else None for x, needed in
                             ((q, needs_q), (k, needs_k), (v, needs_v),
                              (self.bias, needs_bias)))
        needs_scores = needs_q or needs_k or needs_bias  # dS, from dP and P
        rows_sum = (grad * out).sum(axis=-1, keepdims=True)  # D
        device = backend.device_of(q)
        replay = (backend.rng_replay(self.rng_mark, device) if self.dropout_p else
                  contextlib.nullcontext())
        with replay:  # the same keep masks as the forward pass drew, tile by tile
            for rows, cols, diagonal in _tiles(q.shape[-2], k.shape[-2], self.block,
                                               self.causal):
                p = xp.exp(self._scores(q, k, rows, cols, diagonal) - self.lse[..., rows, :])
                keep = (keep_mask(p.shape, self.dropout_p, p.dtype, device)
                        if self.dropout_p else None)  # drawn for every tile, in step
                if needs_v:
                    attended = p if keep is None else p * keep
                    gv[..., cols, :] += attended.swapaxes(-1, -2) @ grad[..., rows, :]
                if not needs_scores:
                    continue
                dp = grad[..., rows, :] @ v[..., cols, :].swapaxes(-1, -2)
                if keep is not None:
                    dp *= keep
                ds = p * (dp - rows_sum[..., rows, :])
                if needs_q:
                    gq[..., rows, :] += ds @ k[..., cols, :]
                if needs_k:
                    gk[..., cols, :] += ds.swapaxes(-1, -2) @ q[..., rows, :]
                if needs_bias:
                    r = rows if gbias.shape[-2] > 1 else slice(None)
                    c = cols if gbias.shape[-1] > 1 else slice(None)
                    gbias[..., r, c] += unbroadcast(ds, gbias[..., r, c].shape)
        q_shape, k_shape, v_shape = self.shapes
        return (None if gq is None else unbroadcast(gq * self.scale, q_shape),
                None if gk is None else unbroadcast(gk, k_shape),
                None if gv is None else unbroadcast(gv, v_shape), gbias)


def blockwise_attention(q, k, v, mask=None, bias=None, causal=False, dropout_p=0.0,
                        training=True, block_size=128):
    """Attention of q (..., Lq, Dk) over k (..., Lk, Dk), v (..., Lk, Dv) -> (..., Lq, Dv),
    equal to ``scaled_dot_product_attention``'s output but computed in tiles of
    ``block_size`` queries x ``block_size`` keys, in memory linear in the lengths.

    ``mask``: boolean, True = may attend, broadcastable to (..., Lq, Lk).
    ``bias``: a float Tensor or array added to the scores, broadcastable to (..., Lq, Lk);
    differentiable when it is a Tensor that requires grad. k and v may have fewer heads
    than q (grouped-query attention), as in ``scaled_dot_product_attention``.
    ``causal``: query r attends to keys up to r + Lk - Lq (queries aligned to the end of
    the keys); tiles entirely above that diagonal are skipped, not computed.
    Dropout with ``dropout_p`` acts on the weights while ``training``; the backward pass
    redraws each tile's mask (``backend.rng_replay``). No weights are returned: they
    never exist whole.
    """
    name = "blockwise_attention"
    block_size = arguments.positive_integer(name, "block_size", block_size)
    causal = arguments.flag(name, "causal", causal)
    q, k, v, mask, bias, groups = check_attention_arguments(name, q, k, v, mask, bias,
                                                            dropout_p)
    if bias is not None and bias.ndim < 2:  # the tiles slice its last two axes
        bias = bias.reshape(*(1,) * (2 - bias.ndim), *bias.shape)
    inputs = (q, k, v) if bias is None else (q, k, v, bias)
    out = BlockwiseAttention.apply(*inputs, mask=mask, causal=causal, block=block_size,
                                   dropout_p=dropout_p if training else 0.0)
    # grouped heads (..., H_kv, G, L, D) back to (..., H, L, D)
    return out if groups == 1 else out.reshape(*out.shape[:-4], -1, *out.shape[-2:])
