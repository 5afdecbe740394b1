"""Every block and model of ``minitransformer.nn``, written out again in plain NumPy: the
forward oracles of ``test_forward_oracle.py``.

A gradient check proves that backward matches *our own* forward; a forward that is wrong
but self-consistent (pre-LN where post-LN was meant, a LayerNorm in the wrong place)
passes it. These functions recompute each output from the published formulas, on host
float64 copies of a module's weights, without calling any minitransformer code. They take
the module only for its weights; every setting (heads, eps, activation, pre- or post-LN)
comes from the caller, i.e. from the test or the model's config, so that a module that
ignores a setting disagrees with its reference instead of passing it on to it.

Masks are boolean and broadcast to (B, H, Lq, Lk), True = may attend.
"""
import math

import numpy as np

from strategies import host


def weight(parameter):
    """A host float64 copy of a parameter (or buffer)."""
    return host(parameter.data).astype(np.float64)


# ---- functions -------------------------------------------------------------------------

def linear(layer, x):
    """x Wᵀ + b, W (out, in)."""
    out = x @ weight(layer.weight).T
    return out if layer.bias is None else out + weight(layer.bias)


def layer_norm(norm, x, eps):
    """(x - mean) / sqrt(var + eps) * gain + shift, biased variance over the last axis."""
    centred = x - x.mean(-1, keepdims=True)
    variance = (centred ** 2).mean(-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * weight(norm.weight) + weight(norm.bias)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def activation(name, x):
    """ReLU, or the exact GELU x Phi(x) = x (1 + erf(x / sqrt 2)) / 2."""
    return np.maximum(x, 0) if name == "relu" else 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def sinusoids(length, dim, start=0):
    """The paper's table: PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(...)."""
    table = np.zeros((length, dim))
    for row, p in enumerate(range(start, start + length)):
        for i in range(0, dim, 2):
            angle = p / 10000 ** (i / dim)
            table[row, i] = math.sin(angle)
            if i + 1 < dim:
                table[row, i + 1] = math.cos(angle)
    return table


def causal(length):
    """(1, 1, L, L): query i may attend to keys 0..i."""
    return np.tril(np.ones((length, length), bool))[None, None]


def key_padding(ids, pad_id):
    """(B, 1, 1, L): every key that is not padding."""
    return (ids != pad_id)[:, None, None, :]


# ---- blocks ----------------------------------------------------------------------------

def attention(mha, query, key, value, mask, num_heads):
    """Multi-head attention, one head at a time: head h uses columns h*dh..(h+1)*dh of
    the projections, softmax(q kᵀ / sqrt(dh)) over the allowed keys (none allowed: zero)."""
    q, k, v = (linear(layer, x) for layer, x in
               ((mha.w_q, query), (mha.w_k, key), (mha.w_v, value)))
    batch, lq, d = q.shape
    dh = d // num_heads
    allowed = np.broadcast_to(True if mask is None else mask,
                              (batch, num_heads, lq, k.shape[1]))
    heads = []
    for h in range(num_heads):
        cols = slice(h * dh, (h + 1) * dh)
        scores = q[..., cols] @ k[..., cols].swapaxes(-1, -2) / math.sqrt(dh)
        scores = np.where(allowed[:, h], scores, -np.inf)
        top = scores.max(-1, keepdims=True)
        weights = np.exp(scores - np.where(np.isfinite(top), top, 0))
        weights /= np.maximum(weights.sum(-1, keepdims=True), 1e-300)
        heads.append(weights @ v[..., cols])
    return linear(mha.w_o, np.concatenate(heads, -1))


def feed_forward(ff, x, activation_name):
    return linear(ff.linear2, activation(activation_name, linear(ff.linear1, x)))


def encoder_layer(layer, x, mask, *, norm_first, activation_name, num_heads, eps):
    """post-LN: x = LN(x + SA(x)); x = LN(x + FF(x)).
    pre-LN:  x = x + SA(LN(x)); x = x + FF(LN(x))."""
    def self_attention(h):
        return attention(layer.self_attn, h, h, h, mask, num_heads)

    def ff(h):
        return feed_forward(layer.feed_forward, h, activation_name)

    if norm_first:
        x = x + self_attention(layer_norm(layer.norm1, x, eps))
        return x + ff(layer_norm(layer.norm2, x, eps))
    x = layer_norm(layer.norm1, x + self_attention(x), eps)
    return layer_norm(layer.norm2, x + ff(x), eps)


def decoder_layer(layer, x, memory, self_mask, memory_mask, *, norm_first, activation_name,
                  num_heads, eps):
    """As ``encoder_layer``, with cross-attention to ``memory`` between the two."""
    def self_attention(h):
        return attention(layer.self_attn, h, h, h, self_mask, num_heads)

    def cross_attention(h):
        return attention(layer.cross_attn, h, memory, memory, memory_mask, num_heads)

    def ff(h):
        return feed_forward(layer.feed_forward, h, activation_name)

    if norm_first:
        x = x + self_attention(layer_norm(layer.norm1, x, eps))
        x = x + cross_attention(layer_norm(layer.norm2, x, eps))
        return x + ff(layer_norm(layer.norm3, x, eps))
    x = layer_norm(layer.norm1, x + self_attention(x), eps)
    x = layer_norm(layer.norm2, x + cross_attention(x), eps)
    return layer_norm(layer.norm3, x + ff(x), eps)


def encoder(stack, x, mask, *, norm_first, eps, **settings):
    """The layers in turn; a pre-LN stack ends with a LayerNorm."""
    for layer in stack.layers:
        x = encoder_layer(layer, x, mask, norm_first=norm_first, eps=eps, **settings)
    return layer_norm(stack.norm, x, eps) if norm_first else x


def decoder(stack, x, memory, self_mask, memory_mask, *, norm_first, eps, **settings):
    for layer in stack.layers:
        x = decoder_layer(layer, x, memory, self_mask, memory_mask, norm_first=norm_first,
                          eps=eps, **settings)
    return layer_norm(stack.norm, x, eps) if norm_first else x


# ---- models ----------------------------------------------------------------------------

def transformer(model, src, tgt):
    """The encoder-decoder: embeddings * sqrt(d) + sinusoids (stored in float32, as the
    model stores its table), source padding mask, causal and padding target mask."""
    c = model.config
    settings = dict(norm_first=c.norm_first, activation_name=c.activation,
                    num_heads=c.num_heads, eps=c.layer_norm_eps)

    def embed(table, ids):
        positions = sinusoids(ids.shape[1], c.d_model).astype(np.float32)
        return weight(table.weight)[ids] * math.sqrt(c.d_model) + positions

    src_mask, tgt_mask = None, causal(tgt.shape[1])
    if c.pad_id is not None:
        src_mask = key_padding(src, c.pad_id)
        tgt_mask = tgt_mask & key_padding(tgt, c.pad_id)
    memory = encoder(model.encoder, embed(model.src_embedding, src), src_mask, **settings)
    out = decoder(model.decoder, embed(model.tgt_embedding, tgt), memory, tgt_mask,
                  src_mask, **settings)
    return linear(model.generator, out)


def gpt(model, ids):
    """GPT-2: token + learned position embeddings, pre-LN blocks under a causal mask, a
    final LayerNorm, then the (bias-free) output layer."""
    c = model.config
    x = weight(model.token_embedding.weight)[ids]
    x = x + weight(model.position_embedding.weight)[:ids.shape[1]]
    for block in model.blocks:
        x = encoder_layer(block, x, causal(ids.shape[1]), norm_first=True,
                          activation_name=c.activation, num_heads=c.num_heads,
                          eps=c.layer_norm_eps)
    return linear(model.lm_head, layer_norm(model.final_norm, x, c.layer_norm_eps))


def encoder_classifier_hidden(model, ids, attention_mask=None, token_type_ids=None):
    """BERT: LayerNorm(word + position + token type embeddings), then post-LN layers.
    ``attention_mask`` (B, L): nonzero for real tokens; default: ids != pad_id."""
    c = model.config
    x = weight(model.token_embedding.weight)[ids]
    x = x + weight(model.position_embedding.weight)[:ids.shape[1]]
    if c.type_vocab_size:
        types = np.zeros_like(ids) if token_type_ids is None else token_type_ids
        x = x + weight(model.token_type_embedding.weight)[types]
    x = layer_norm(model.embedding_norm, x, c.layer_norm_eps)
    if attention_mask is not None:
        mask = (attention_mask != 0)[:, None, None, :]
    else:
        mask = None if c.pad_id is None else key_padding(ids, c.pad_id)
    for layer in model.encoder.layers:
        x = encoder_layer(layer, x, mask, norm_first=False, activation_name=c.activation,
                          num_heads=c.num_heads, eps=c.layer_norm_eps)
    return x


def encoder_classifier(model, ids, attention_mask=None, token_type_ids=None):
    """The [CLS] vector through tanh(pooler), then the classifier."""
    hidden = encoder_classifier_hidden(model, ids, attention_mask, token_type_ids)
    return linear(model.classifier, np.tanh(linear(model.pooler, hidden[:, 0])))
