"""Transformer blocks: the feed-forward network, encoder and decoder layers, and stacks.

Every sub-layer sits in a residual connection with a LayerNorm, in one of two places:

  post-LN (the paper, ``norm_first=False``):  x = norm(x + dropout(sublayer(x)))
  pre-LN  (GPT-2 and later, ``norm_first=True``): x = x + dropout(sublayer(norm(x)))

Pre-LN trains more stably without warmup; its stacks end with one more LayerNorm,
since the residual stream itself is never normalised. The layout, names and defaults
follow ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer``
(batch_first=True), so weights can be copied across one to one.
"""
from .. import arguments
from .. import functional as F
from .attention import MultiHeadAttention
from .layers import Dropout, LayerNorm, Linear
from .module import Module, ModuleList

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}  # gelu: the exact, erf-based one


class FeedForward(Module):
    """The position-wise network: linear2(dropout(activation(linear1(x)))).
    x (B, L, d_model) -> (B, L, d_model), with d_ff hidden units."""

    def __init__(self, d_model, d_ff, dropout=0.1, activation="relu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"FeedForward: activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.activation = activation
        self.linear1 = Linear(d_model, d_ff)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(d_ff, d_model)

    def forward(self, x):
        return self.linear2(self.dropout(ACTIVATIONS[self.activation](self.linear1(x))))

    def extra_repr(self):
        return f"activation={self.activation!r}"


class EncoderLayer(Module):
    """Self-attention, then the feed-forward network. x (B, L, D) -> (B, L, D).

    ``mask`` (True = may attend) broadcasts to (B, H, L, L): a padding mask (B, 1, 1, L)
    in an encoder, a causal mask in a decoder-only model such as GPT, whose blocks are
    exactly these layers. ``cache``: an ``AttentionCache`` for incremental decoding.
    """

    def __init__(self, d_model, num_heads, d_ff, dropout=0.1, activation="relu",
                 norm_first=False, layer_norm_eps=1e-5):
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = LayerNorm(d_model, layer_norm_eps)
        self.norm2 = LayerNorm(d_model, layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(self, x, mask=None, cache=None):
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h, h, h, mask, cache))
            return x + self.dropout2(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, mask, cache)))
        return self.norm2(x + self.dropout2(self.feed_forward(x)))

    def extra_repr(self):
        return f"norm_first={self.norm_first}"


class DecoderLayer(Module):
    """Masked self-attention, cross-attention to the encoder memory, then the
    feed-forward network. x (B, Lt, D), memory (B, Ls, D) -> (B, Lt, D).

    ``self_mask`` broadcasts to (B, H, Lt, Lt) (causal, and target padding);
    ``memory_mask`` to (B, H, Lt, Ls) (source padding). For incremental decoding pass
    ``cache`` (an ``AttentionCache``) for the self-attention and ``memory_cache`` (a
    static one) for the cross-attention.
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
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None,
                memory_cache=None):
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h, h, h, self_mask, cache))
            h = self.norm2(x)
            x = x + self.dropout2(self.cross_attn(h, memory, memory, memory_mask,
                                                  memory_cache))
            return x + self.dropout3(self.feed_forward(self.norm3(x)))
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, self_mask, cache)))
        x = self.norm2(x + self.dropout2(self.cross_attn(x, memory, memory, memory_mask,
                                                         memory_cache)))
        return self.norm3(x + self.dropout3(self.feed_forward(x)))

    def extra_repr(self):
        return f"norm_first={self.norm_first}"


def _check_num_layers(owner, num_layers):
    arguments.positive_integer(owner, "num_layers", num_layers)


class Encoder(Module):
    """``num_layers`` encoder layers; pre-LN stacks end with a LayerNorm (``norm``).
    forward(x (B, L, D), mask=None) -> (B, L, D). Arguments as for ``EncoderLayer``."""

    def __init__(self, num_layers, d_model, num_heads, d_ff, dropout=0.1, activation="relu",
                 norm_first=False, layer_norm_eps=1e-5):
        _check_num_layers("Encoder", num_layers)
        self.layers = ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout, activation, norm_first,
                         layer_norm_eps) for _ in range(num_layers))
        self.norm = LayerNorm(d_model, layer_norm_eps) if norm_first else None

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask)
        return x if self.norm is None else self.norm(x)


class Decoder(Module):
    """``num_layers`` decoder layers; pre-LN stacks end with a LayerNorm (``norm``).
    forward(x (B, Lt, D), memory (B, Ls, D), self_mask=None, memory_mask=None,
    cache=None) -> (B, Lt, D); ``cache`` is a ``KVCache(num_layers, cross_attention=True)``.
    Arguments as for ``DecoderLayer``."""

    def __init__(self, num_layers, d_model, num_heads, d_ff, dropout=0.1, activation="relu",
                 norm_first=False, layer_norm_eps=1e-5):
        _check_num_layers("Decoder", num_layers)
        self.layers = ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, dropout, activation, norm_first,
                         layer_norm_eps) for _ in range(num_layers))
        self.norm = LayerNorm(d_model, layer_norm_eps) if norm_first else None

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None):
        for i, layer in enumerate(self.layers):
            layer_caches = (None, None) if cache is None else (
                cache.self_attention[i], cache.cross_attention[i])
            x = layer(x, memory, self_mask, memory_mask, *layer_caches)
        return x if self.norm is None else self.norm(x)
