"""Transformer blocks: the feed-forward network, encoder and decoder layers, and stacks.

Every sub-layer sits in a residual connection with a LayerNorm, in one of two places:

  post-LN (the paper, ``norm_first=False``):  x = norm(x + dropout(sublayer(x)))
  pre-LN  (GPT-2 and later, ``norm_first=True``): x = x + dropout(sublayer(norm(x)))

Pre-LN trains more stably without warmup; its stacks end with one more LayerNorm,
since the residual stream itself is never normalised. The layout, names and defaults
follow ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer``
(batch_first=True), so weights can be copied across one to one.

Newer models are options of the same blocks, not new classes: ``norm="rms"``,
gated feed-forwards (``activation="swiglu"``), grouped-query attention
(``num_kv_heads``), RoPE (``rotary_base``), no biases (``bias=False``), and an additive
attention bias (ALiBi, T5) passed to ``forward``. A LLaMA block is
``TransformerBlock(..., activation="swiglu", norm_first=True, norm="rms",
num_kv_heads=2, bias=False, rotary_base=10000.0, causal=True)``.

Mask names (True = may attend) say which attention they restrict: ``mask`` where there
is one, ``self_mask`` and ``memory_mask`` in a decoder (the README lists the models'
names). Inside the package masks always travel by keyword.
"""
from .. import arguments
from .. import functional as F
from ..recompute import recompute
from .attention import MultiHeadAttention
from .layers import Dropout, LayerNorm, Linear, RMSNorm
from .module import Module, ModuleList

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}  # gelu: the exact, erf-based one
GATED = {"swiglu": F.silu, "geglu": F.gelu}     # Shazeer (2020), "GLU Variants..."


class FeedForward(Module):
    """The position-wise network: linear2(dropout(activation(linear1(x)))), or, gated
    (``"swiglu"``, ``"geglu"``), linear2(dropout(act(gate(x)) * linear1(x))) with act
    SiLU or GELU. x (B, L, d_model) -> (B, L, d_model), with d_ff hidden units.
    (A gated network has a third matrix: LLaMA takes d_ff about 8/3 d_model, not 4.)"""

    def __init__(self, d_model, d_ff, dropout=0.1, activation="relu", bias=True):
        if not isinstance(activation, str) or activation not in {**ACTIVATIONS, **GATED}:
            raise ValueError(f"FeedForward: activation must be one of "
                             f"{sorted(ACTIVATIONS) + sorted(GATED)}, got {activation!r}")
        self.activation = activation
        self.linear1 = Linear(d_model, d_ff, bias)
        self.gate = Linear(d_model, d_ff, bias) if activation in GATED else None
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(d_ff, d_model, bias)

    def forward(self, x):
        if self.gate is None:
            hidden = ACTIVATIONS[self.activation](self.linear1(x))
        else:
            hidden = GATED[self.activation](self.gate(x)) * self.linear1(x)
        return self.linear2(self.dropout(hidden))

    def extra_repr(self):
        return f"activation={self.activation!r}"


def make_norm(norm, dim, eps, bias=True):
    """A ``LayerNorm`` (``norm="layer"``, its bias optional) or an ``RMSNorm`` (``"rms"``)."""
    if norm not in ("layer", "rms"):
        raise ValueError(f"norm must be 'layer' or 'rms', got {norm!r}")
    return LayerNorm(dim, eps, bias) if norm == "layer" else RMSNorm(dim, eps)


class TransformerBlock(Module):
    """Self-attention, then the feed-forward network. x (B, L, D) -> (B, L, D): an
    encoder layer, and, with ``causal=True``, a block of a decoder-only model (GPT).

    ``mask`` (True = may attend) broadcasts to (B, H, L, L), e.g. a padding mask
    (B, 1, 1, L) in an encoder. ``causal``: each position attends only to itself and
    those before it. ``cache``: an ``AttentionCache`` for incremental decoding.
    ``bias``: added to the attention scores, broadcastable to (B, H, L, L).
    ``norm``, ``num_kv_heads``, ``bias`` (of every Linear and LayerNorm) and
    ``rotary_base`` as in the module docstring.
    """

    def __init__(self, d_model, num_heads, d_ff, dropout=0.1, activation="relu",
                 norm_first=False, layer_norm_eps=1e-5, norm="layer", num_kv_heads=None,
                 bias=True, rotary_base=None, causal=False):
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, bias, num_kv_heads,
                                            rotary_base, causal=causal)
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.norm1 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.norm2 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, x, mask=None, cache=None, bias=None):
        x = _residual(x, lambda h: self.self_attn(h, h, h, mask=mask, cache=cache, bias=bias),
                      self.norm1, self.dropout1, self.norm_first)
        return _residual(x, self.feed_forward, self.norm2, self.dropout2, self.norm_first)

    def extra_repr(self):
        return f"norm_first={self.norm_first}"


def _residual(x, sublayer, norm, dropout, norm_first):
    """``sublayer`` with its residual connection, its ``norm`` and its ``dropout``: pre-LN
    or post-LN as in the module docstring."""
    if norm_first:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


EncoderLayer = TransformerBlock  # the name of torch.nn and of earlier code


class DecoderLayer(Module):
    """Masked self-attention, cross-attention to the encoder memory, then the
    feed-forward network. x (B, Lt, D), memory (B, Ls, D) -> (B, Lt, D).

    ``self_mask`` broadcasts to (B, H, Lt, Lt) (causal, and target padding);
    ``memory_mask`` to (B, H, Lt, Ls) (source padding). For incremental decoding pass
    ``cache`` (an ``AttentionCache``) for the self-attention and ``memory_cache`` (a
    static one) for the cross-attention. ``self_bias`` is added to the self-attention
    scores (T5's relative positions).
    """

    def __init__(self, d_model, num_heads, d_ff, dropout=0.1, activation="relu",
                 norm_first=False, layer_norm_eps=1e-5):
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = LayerNorm(d_model, layer_norm_eps)
        self.norm2 = LayerNorm(d_model, layer_norm_eps)
        self.norm3 = LayerNorm(d_model, layer_norm_eps)
        self.dropout1, self.dropout2, self.dropout3 = (Dropout(dropout) for _ in range(3))

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None,
                memory_cache=None, self_bias=None):
        x = _residual(x, lambda h: self.self_attn(h, h, h, mask=self_mask, cache=cache,
                                                  bias=self_bias),
                      self.norm1, self.dropout1, self.norm_first)
        x = _residual(x, lambda h: self.cross_attn(h, memory, memory, mask=memory_mask,
                                                   cache=memory_cache),
                      self.norm2, self.dropout2, self.norm_first)
        return _residual(x, self.feed_forward, self.norm3, self.dropout3, self.norm_first)

    extra_repr = TransformerBlock.extra_repr


class _Stack(Module):
    """``num_layers`` layers (``Encoder``: ``TransformerBlock``s, ``Decoder``:
    ``DecoderLayer``s); pre-LN stacks end with a LayerNorm (``norm``)."""
    layer_type = None

    def __init__(self, num_layers, d_model, num_heads, d_ff, dropout=0.1, activation="relu",
                 norm_first=False, layer_norm_eps=1e-5):
        arguments.positive_integer(type(self).__name__, "num_layers", num_layers)
        self.layers = ModuleList(
            self.layer_type(d_model, num_heads, d_ff, dropout, activation, norm_first,
                            layer_norm_eps) for _ in range(num_layers))
        self.norm = LayerNorm(d_model, layer_norm_eps) if norm_first else None
        self.recompute = False  # True: each layer's activations are remade in backward


class Encoder(_Stack):
    """forward(x (B, L, D), mask=None, bias=None) -> (B, L, D); as ``TransformerBlock``."""
    layer_type = TransformerBlock

    def forward(self, x, mask=None, bias=None):
        for layer in self.layers:
            if self.recompute:
                x = recompute(lambda h, b, layer=layer: layer(h, mask=mask, bias=b), x, bias)
            else:
                x = layer(x, mask=mask, bias=bias)
        return x if self.norm is None else self.norm(x)


class Decoder(_Stack):
    """forward(x (B, Lt, D), memory (B, Ls, D), self_mask=None, memory_mask=None,
    cache=None, self_bias=None) -> (B, Lt, D), as ``DecoderLayer``; ``cache`` is a
    ``KVCache(num_layers, cross_attention=True)``."""
    layer_type = DecoderLayer

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None, self_bias=None):
        masks = dict(self_mask=self_mask, memory_mask=memory_mask)
        for i, layer in enumerate(self.layers):
            if self.recompute and cache is None:
                x = recompute(lambda h, m, b, layer=layer: layer(h, m, **masks, self_bias=b),
                              x, memory, self_bias)
            else:
                caches = {} if cache is None else dict(cache=cache.self_attention[i],
                                                       memory_cache=cache.cross_attention[i])
                x = layer(x, memory, **masks, self_bias=self_bias, **caches)
        return x if self.norm is None else self.norm(x)
