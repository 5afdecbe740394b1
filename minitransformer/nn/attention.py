"""Multi-head attention, and the key/value cache for incremental decoding.

All heads are computed at once: a (B, L, D) projection is viewed as (B, L, H, D/H) and
transposed to (B, H, L, D/H), so one batched matmul inside
``functional.scaled_dot_product_attention`` serves every head -- no loop over heads.

Masks are boolean, True = may attend (see ``masks``; ``torch.nn.MultiheadAttention``
uses the opposite convention, True = blocked).
"""
from .. import arguments
from .. import functional as F
from ..functional.attention import attention, check_bias, group_heads
from ..masks import causal_mask, combine_masks
from ..ops import concatenate
from .checks import check_device, check_features, check_mask
from .layers import Linear, _sizes
from .module import Module


class AttentionCache:
    """The keys and values, (B, H_kv, L, D/H) each, that one attention sub-layer has
    computed so far while a decoder generates one token at a time. With grouped-query
    attention H_kv < H heads are stored: the cache is H / H_kv times smaller.

    Self-attention appends the keys and values of each step's new positions, so a step
    costs O(L) instead of recomputing all L positions. Cross-attention (``static=True``)
    attends to a fixed encoder memory: its keys and values are computed on the first
    step and reused on every later one.
    """

    def __init__(self, static=False):
        self.static = static
        self.keys = self.values = None

    def __len__(self):  # the number of positions cached
        return 0 if self.keys is None else self.keys.shape[2]

    def update(self, keys, values):
        """Store the new keys and values; return all of them."""
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = concatenate([self.keys, keys], axis=2)  # (B, H_kv, L_old + L_new, D/H)
            self.values = concatenate([self.values, values], axis=2)
        return self.keys, self.values

    def select(self, batch_indices):
        """Keep (and reorder, repeat) the batch rows ``batch_indices``, e.g. for beam search."""
        if self.keys is not None:
            self.keys, self.values = self.keys[batch_indices], self.values[batch_indices]


class KVCache:
    """What a decoder keeps between decoding steps: for each layer, an ``AttentionCache``
    for its self-attention and, in an encoder-decoder model, one for its cross-attention.

    Make a fresh one per batch to decode (``model.new_cache()``), pass it to every step,
    and feed each step only the new tokens; ``len(cache)`` is the number of positions
    decoded so far.
    """

    def __init__(self, num_layers, cross_attention=False):
        self.self_attention = [AttentionCache() for _ in range(num_layers)]
        self.cross_attention = [AttentionCache(static=True) if cross_attention else None
                                for _ in range(num_layers)]

    def __len__(self):
        return len(self.self_attention[0])

    def select(self, batch_indices):
        """Keep (and reorder, repeat) the batch rows ``batch_indices`` in every layer."""
        for cache in self.self_attention + self.cross_attention:
            if cache is not None:
                cache.select(batch_indices)


class MultiHeadAttention(Module):
    """Attention with ``num_heads`` heads of size d_model / num_heads.

    forward(query (B, Lq, D), key (B, Lk, D), value (B, Lk, D), mask=None, cache=None,
    bias=None) -> (B, Lq, D). Self-attention passes the same tensor three times;
    cross-attention passes the decoder states as query and the encoder memory as key
    and value.

    ``num_kv_heads``: grouped-query attention (GQA) with that many key/value heads, each
    shared by num_heads / num_kv_heads query heads (1: multi-query attention); w_k and
    w_v are then (num_kv_heads * D/H, D), and so is the cache. Default: num_heads.
    ``mask``: boolean, True = may attend, broadcastable to (B, H, Lq, Lk). A query that
    may attend to nothing gets a zero output, not NaN.
    ``bias``: float, broadcastable to (B, H, Lq, Lk), added to the attention scores
    (ALiBi, T5's relative position bias).
    ``rotary_base``: rotate queries and keys by their positions (RoPE, with this base;
    self-attention only). Positions continue after the ``cache``'s.
    ``cache``: an ``AttentionCache``; a static (cross-attention) one ignores ``key`` and
    ``value`` once it holds their projections.
    ``dropout`` (held as ``dropout_p``) acts on the attention weights while training.
    ``causal``: a query also sees only the keys up to its own position (queries aligned
    to the end of the keys, so a cache needs nothing more); blockwise attention then
    skips the tiles above the diagonal rather than masking them.

    ``attention="blockwise"``: the same output by ``functional.blockwise_attention``, in
    tiles of ``block_size``, in memory linear in the length. After each call
    ``attention_weights`` holds the weights (B, H, Lq, Lk) without a graph, for
    visualisation (None when blockwise: the weights never exist whole).
    """

    def __init__(self, d_model, num_heads, dropout=0.0, bias=True, num_kv_heads=None,
                 rotary_base=None, attention="plain", block_size=128, causal=False):
        d_model, num_heads = _sizes("MultiHeadAttention", d_model=d_model, num_heads=num_heads)
        if d_model % num_heads:
            raise ValueError(f"MultiHeadAttention: num_heads={num_heads!r} must be a positive "
                             f"integer dividing d_model={d_model}")
        num_kv_heads, = _sizes("MultiHeadAttention",
                               num_kv_heads=num_heads if num_kv_heads is None else num_kv_heads)
        if num_heads % num_kv_heads:
            raise ValueError(f"MultiHeadAttention: num_kv_heads={num_kv_heads!r} must be a "
                             f"positive integer dividing num_heads={num_heads}")
        self.d_model, self.num_heads = d_model, num_heads
        self.dropout_p = arguments.fraction("MultiHeadAttention", "dropout", dropout)
        self.num_kv_heads, self.head_dim = num_kv_heads, d_model // num_heads
        if rotary_base is not None:
            rotary_base = arguments.positive_number("MultiHeadAttention", "rotary_base",
                                                    rotary_base)
            if self.head_dim % 2:
                raise ValueError(f"MultiHeadAttention: RoPE rotates pairs of features, but "
                                 f"the head size d_model/num_heads = {self.head_dim} is odd; "
                                 "choose d_model and num_heads with an even quotient")
        self.rotary_base = rotary_base
        self.causal = arguments.flag("MultiHeadAttention", "causal", causal)
        self.use_attention(attention, block_size)
        self.w_q = Linear(d_model, d_model, bias)
        self.w_k = Linear(d_model, num_kv_heads * self.head_dim, bias)
        self.w_v = Linear(d_model, num_kv_heads * self.head_dim, bias)
        self.w_o = Linear(d_model, d_model, bias)
        self.attention_weights = None

    def use_attention(self, attention, block_size=128):
        """Switch between ``"plain"`` and ``"blockwise"`` attention (same parameters)."""
        if attention not in ("plain", "blockwise"):
            raise ValueError(f"MultiHeadAttention: attention must be 'plain' or 'blockwise', "
                             f"got {attention!r}")
        block_size = arguments.positive_integer("MultiHeadAttention", "block_size", block_size)
        self.attention, self.block_size = attention, block_size

    def forward(self, query, key, value, mask=None, cache=None, bias=None):
        device = self._check_inputs(query, key, value, cache)
        q = self._split_heads(self.w_q(query), self.num_heads)  # (B, H, Lq, D/H)
        start = 0 if cache is None else len(cache)
        q = self._rotate(q, start)
        if cache is not None and cache.static and cache.keys is not None:
            k, v = cache.keys, cache.values  # (B, H_kv, Lk, D/H) each
        else:
            k = self._rotate(self._split_heads(self.w_k(key), self.num_kv_heads), start)
            v = self._split_heads(self.w_v(value), self.num_kv_heads)  # (B, H_kv, Lk, D/H)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, H_kv, past + Lk, D/H)
        scores = (query.shape[0], self.num_heads, query.shape[1], k.shape[2])  # (B, H, Lq, Lk)
        if not scores[3]:
            raise ValueError("MultiHeadAttention: key has 0 positions; attention needs at "
                             "least one key (mask keys out instead of removing them all)")
        mask = check_mask("MultiHeadAttention", "mask", mask, scores, device)
        bias = check_bias("MultiHeadAttention", bias, q, scores, "(B, H, Lq, Lk)")
        if self.attention == "blockwise":
            out, weights = F.blockwise_attention(
                q, k, v, mask, bias, self.causal, self.dropout_p, self.training,
                self.block_size), None
        else:  # the arguments are checked: no need to again
            if self.causal:
                mask = combine_masks(mask, causal_mask(scores[2], scores[3], q.device))
            out, weights = attention(*group_heads(q, k, v, mask, bias),
                                     self.dropout_p if self.training else 0.0)
        self.attention_weights = weights  # already without a graph
        return self.w_o(self._merge_heads(out))  # (B, H, Lq, D/H) -> (B, Lq, D)

    def _rotate(self, x, start):
        """RoPE for x (B, heads, L, D/H) at positions start .. start + L - 1."""
        if self.rotary_base is None:
            return x
        positions = x.xp.arange(start, start + x.shape[2])
        return F.rotary_embedding(x, positions, self.rotary_base)

    def _split_heads(self, x, heads):
        """(B, L, heads * D/H) -> (B, heads, L, D/H): a view and a transpose, no copy."""
        batch, length = x.shape[:2]
        return x.reshape(batch, length, heads, self.head_dim).transpose(0, 2, 1, 3)

    def _merge_heads(self, x):
        """(B, H, L, D/H) -> (B, L, D), the inverse of ``_split_heads``."""
        batch, _, length, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(batch, length, self.d_model)  # via (B, L, H, D/H)

    def _check_inputs(self, query, key, value, cache):
        """Check the inputs; return the parameters' device, for the mask's check."""
        device = self.device
        uses_key_value = cache is None or not cache.static or cache.keys is None
        named = dict(query=query, **(dict(key=key, value=value) if uses_key_value else {}))
        for name, x in named.items():
            check_features("MultiHeadAttention", name, x, self.d_model)
            check_device("MultiHeadAttention", name, x, device)
            if x.shape[0] != query.shape[0]:
                raise ValueError(f"MultiHeadAttention: {name} has batch size {x.shape[0]}, "
                                 f"but query has {query.shape[0]}")
        if uses_key_value and key.shape[1] != value.shape[1]:
            raise ValueError(f"MultiHeadAttention: key has length {key.shape[1]} but value "
                             f"has {value.shape[1]}; they must match")
        return device

    def extra_repr(self):
        kv = "" if self.num_kv_heads == self.num_heads else f", num_kv_heads={self.num_kv_heads}"
        blockwise = (f", attention='blockwise', block_size={self.block_size}"
                     if self.attention == "blockwise" else "")
        causal = ", causal=True" if self.causal else ""
        return (f"d_model={self.d_model}, num_heads={self.num_heads}{kv}, "
                f"dropout={self.dropout_p}{blockwise}{causal}")
