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
    out = centred / np.sqrt(variance + eps) * weight(norm.weight)
    return out if norm.bias is None else out + weight(norm.bias)


def rms_norm(norm, x, eps):
    """x / sqrt(mean(x^2) + eps) * gain (Zhang and Sennrich, 2019)."""
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * weight(norm.weight)


def normalize(kind, norm, x, eps):
    return layer_norm(norm, x, eps) if kind == "layer" else rms_norm(norm, x, eps)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def activation(name, x):
    """ReLU, SiLU x sigmoid(x), or the exact GELU x Phi(x) = x (1 + erf(x / sqrt 2)) / 2."""
    if name == "relu":
        return np.maximum(x, 0)
    if name in ("silu", "swiglu"):
        return x / (1 + np.exp(-x))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


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


def rope(x, positions, base):
    """RoPE, half-split layout: pair (x[i], x[i + d/2]) of x (..., L, d) at position p
    turns by the angle p * base^(-2i/d)."""
    half = x.shape[-1] // 2
    out = np.empty_like(x)
    for i in range(half):
        angle = positions * base ** (-2 * i / x.shape[-1])
        cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
        first, second = x[..., i:i + 1], x[..., half + i:half + i + 1]
        out[..., i:i + 1] = first * cos - second * sin
        out[..., half + i:half + i + 1] = second * cos + first * sin
    return out


def alibi_slopes(num_heads):
    """Press et al. (2022): 2^(-8h/n), h = 1..n, for n the largest power of two <= H;
    then every other slope of 2n for the remaining heads."""
    n = 2 ** int(math.log2(num_heads))
    extra = [2 ** (-8 * h / (2 * n)) for h in range(1, 2 * n + 1, 2)]
    return [2 ** (-8 * h / n) for h in range(1, n + 1)] + extra[:num_heads - n]


def alibi(num_heads, length):
    """(1, H, L, L): -slope_h |i - j|."""
    distance = np.abs(np.arange(length)[:, None] - np.arange(length)[None, :])
    return (-np.array(alibi_slopes(num_heads))[:, None, None] * distance)[None]


def t5_bucket(relative, bidirectional, num_buckets, max_distance):
    """T5's bucket of one key-minus-query offset (Raffel et al., 2020; as in Mesh
    TensorFlow and Hugging Face's ``_relative_position_bucket``)."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        bucket = num_buckets if relative > 0 else 0
        distance = abs(relative)
    else:
        distance = max(-relative, 0)
    exact = num_buckets // 2
    if distance < exact:
        return bucket + distance
    far = exact + int(math.log(distance / exact) / math.log(max_distance / exact)
                      * (num_buckets - exact))
    return bucket + min(far, num_buckets - 1)


def t5_bias(module, length, bidirectional, num_buckets=32, max_distance=128):
    """(1, H, L, L): the learned scalar of each head for the bucket of j - i."""
    table = weight(module.weight)
    buckets = [[t5_bucket(j - i, bidirectional, num_buckets, max_distance)
                for j in range(length)] for i in range(length)]
    return table[np.array(buckets)].transpose(2, 0, 1)[None]


# ---- blocks ----------------------------------------------------------------------------

def attention(mha, query, key, value, mask, num_heads, num_kv_heads=None, bias=None,
              rotary_base=None):
    """Multi-head attention, one head at a time: query head h uses columns h*dh..(h+1)*dh
    of the query projection and key/value head h // (H / H_kv) (grouped-query attention);
    softmax(q kᵀ / sqrt(dh) + bias) over the allowed keys (none allowed: zero output).
    ``rotary_base``: RoPE on q and k, at positions 0, 1, ... (self-attention)."""
    q, k, v = (linear(layer, x) for layer, x in
               ((mha.w_q, query), (mha.w_k, key), (mha.w_v, value)))
    batch, lq, d = q.shape
    dh, group = d // num_heads, num_heads // (num_kv_heads or num_heads)
    shape = (batch, num_heads, lq, k.shape[1])
    allowed = np.broadcast_to(True if mask is None else mask, shape)
    bias = np.broadcast_to(0.0 if bias is None else bias, shape)
    heads = []
    for h in range(num_heads):
        qh = q[..., h * dh:(h + 1) * dh]
        kh, vh = (x[..., h // group * dh:(h // group + 1) * dh] for x in (k, v))
        if rotary_base is not None:
            qh, kh = rope(qh, np.arange(lq), rotary_base), rope(kh, np.arange(lq), rotary_base)
        scores = qh @ kh.swapaxes(-1, -2) / math.sqrt(dh) + bias[:, h]
        scores = np.where(allowed[:, h], scores, -np.inf)
        top = scores.max(-1, keepdims=True)
        weights = np.exp(scores - np.where(np.isfinite(top), top, 0))
        weights /= np.maximum(weights.sum(-1, keepdims=True), 1e-300)
        heads.append(weights @ vh)
    return linear(mha.w_o, np.concatenate(heads, -1))


def feed_forward(ff, x, activation_name):
    """linear2(act(linear1 x)); gated ("swiglu", "geglu"): linear2(act(gate x) * linear1 x)."""
    if activation_name in ("swiglu", "geglu"):
        hidden = activation(activation_name, linear(ff.gate, x)) * linear(ff.linear1, x)
    else:
        hidden = activation(activation_name, linear(ff.linear1, x))
    return linear(ff.linear2, hidden)


def encoder_layer(layer, x, mask, *, norm_first, activation_name, num_heads, eps,
                  norm="layer", num_kv_heads=None, bias=None, rotary_base=None):
    """post-LN: x = N(x + SA(x)); x = N(x + FF(x)).
    pre-LN:  x = x + SA(N(x)); x = x + FF(N(x)).  N: LayerNorm or RMSNorm (``norm``)."""
    def self_attention(h):
        return attention(layer.self_attn, h, h, h, mask, num_heads, num_kv_heads, bias,
                         rotary_base)

    def ff(h):
        return feed_forward(layer.feed_forward, h, activation_name)

    def n(module, h):
        return normalize(norm, module, h, eps)

    if norm_first:
        x = x + self_attention(n(layer.norm1, x))
        return x + ff(n(layer.norm2, x))
    x = n(layer.norm1, x + self_attention(x))
    return n(layer.norm2, x + ff(x))


def decoder_layer(layer, x, memory, self_mask, memory_mask, *, norm_first, activation_name,
                  num_heads, eps, self_bias=None):
    """As ``encoder_layer``, with cross-attention to ``memory`` between the two;
    ``self_bias`` is added to the self-attention scores."""
    def self_attention(h):
        return attention(layer.self_attn, h, h, h, self_mask, num_heads, bias=self_bias)

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
    model stores its table), source padding mask, causal and padding target mask. T5
    positions: no sinusoids, a bidirectional relative bias in the encoder's
    self-attention and a causal one in the decoder's."""
    c = model.config
    settings = dict(norm_first=c.norm_first, activation_name=c.activation,
                    num_heads=c.num_heads, eps=c.layer_norm_eps)
    t5 = c.positions == "t5"

    def embed(table, ids):
        x = weight(table.weight)[ids] * math.sqrt(c.d_model)
        return x if t5 else x + sinusoids(ids.shape[1], c.d_model).astype(np.float32)

    src_mask, tgt_mask = None, causal(tgt.shape[1])
    if c.pad_id is not None:
        src_mask = key_padding(src, c.pad_id)
        tgt_mask = tgt_mask & key_padding(tgt, c.pad_id)
    src_bias = t5_bias(model.encoder_bias, src.shape[1], True) if t5 else None
    tgt_bias = t5_bias(model.decoder_bias, tgt.shape[1], False) if t5 else None
    memory = encoder(model.encoder, embed(model.src_embedding, src), src_mask,
                     bias=src_bias, **settings)
    out = decoder(model.decoder, embed(model.tgt_embedding, tgt), memory, tgt_mask,
                  src_mask, self_bias=tgt_bias, **settings)
    return linear(model.generator, out)


def gpt(model, ids):
    """GPT-2: token + learned position embeddings, pre-LN blocks under a causal mask, a
    final LayerNorm, then the (bias-free) output layer. The config's options: positions
    added (learned, sinusoidal), rotating q and k (rope) or biasing the scores (alibi,
    t5) or none; RMSNorm; gated feed-forwards; grouped-query attention."""
    c, length = model.config, ids.shape[1]
    x = weight(model.token_embedding.weight)[ids]
    if c.positions == "learned":
        x = x + weight(model.position_embedding.weight)[:length]
    elif c.positions == "sinusoidal":  # as in the Transformer: tokens scaled by sqrt(d)
        x = x * math.sqrt(c.d_model) + sinusoids(length, c.d_model).astype(np.float32)
    bias = {"alibi": lambda: alibi(c.num_heads, length),
            "t5": lambda: t5_bias(model.relative_bias, length, False)}.get(
                c.positions, lambda: None)()
    rotary_base = c.rope_base if c.positions == "rope" else None
    for block in model.blocks:
        x = encoder_layer(block, x, causal(length), norm_first=True,
                          activation_name=c.activation, num_heads=c.num_heads,
                          eps=c.layer_norm_eps, norm=c.norm, num_kv_heads=c.num_kv_heads,
                          bias=bias, rotary_base=rotary_base)
    return linear(model.lm_head, normalize(c.norm, model.final_norm, x, c.layer_norm_eps))


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


def masked_lm(model, ids, attention_mask=None):
    """BERT's MLM head: LayerNorm(GELU(dense(hidden))), then the word-embedding table
    (V, D) as the output weight, with its own bias."""
    bert = model.bert
    hidden = encoder_classifier_hidden(bert, ids, attention_mask)
    h = layer_norm(model.head.norm, activation("gelu", linear(model.head.dense, hidden)),
                   bert.config.layer_norm_eps)
    return h @ weight(bert.token_embedding.weight).T + weight(model.head.decoder_bias)


def token_classifier(model, ids, attention_mask=None):
    """One linear layer on every position's hidden state."""
    return linear(model.classifier, encoder_classifier_hidden(model.bert, ids, attention_mask))


def vit(model, images):
    """ViT: patch (i, j) of p x p pixels, flattened in (channel, row, column) order, is
    token i * (W/p) + j; project, prepend the [CLS] vector, add learned positions, a
    pre-LN GELU encoder, and the head on [CLS]."""
    c, p = model.config, model.config.patch_size
    side = c.image_size // p
    patches = np.stack([np.stack([image[:, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)
                                  for i in range(side) for j in range(side)])
                        for image in images])
    tokens = linear(model.patch_embedding, patches)
    cls = np.broadcast_to(weight(model.cls_token), (len(images), 1, c.d_model))
    x = np.concatenate([cls, tokens], axis=1) + weight(model.position_embedding.weight)
    x = encoder(model.encoder, x, None, norm_first=True, activation_name="gelu",
                num_heads=c.num_heads, eps=c.layer_norm_eps)
    return linear(model.head, x[:, 0])


def quantized_linear(layer, x):
    """int8 per output channel: s_i = max_j |w_ij| / 127 (1 for a zero row), codes
    q = round(w / s) (half to even), y = x (s q)ᵀ + b. ``layer``: the float Linear."""
    w = weight(layer.weight)
    scale = np.abs(w).max(axis=1, keepdims=True) / 127
    scale[scale == 0] = 1
    out = x @ (scale * np.round(w / scale)).T
    return out if layer.bias is None else out + weight(layer.bias)
