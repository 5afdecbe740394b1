"""Forward oracles that need no optional package: every block and model against the same
computation written out in plain NumPy (``reference.py``), in float64, on random weights
(LayerNorm gains and shifts included, so that a swapped or skipped one shows).

Gradient checks cannot catch a forward pass that is wrong but self-consistent -- GPT built
post-LN, BERT's embedding LayerNorm before the positions are added: these tests can."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import reference as ref
from minitransformer import nn

seeds = st.integers(0, 2**32 - 1)
activations = st.sampled_from(["relu", "gelu"])
epsilons = st.sampled_from([1e-5, 1e-2, 0.5])  # a large eps shows where it is added


def close(actual, expected):
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-9, atol=1e-10)


def prepared(module, seed):
    """``module`` in float64 and eval mode, every parameter redrawn from N(0, 0.5²)."""
    module.to(dtype=np.float64).eval()
    rng = np.random.default_rng(seed)
    for p in module.parameters():  # tied parameters appear once
        p.data = mt.tensor(rng.normal(0.0, 0.5, p.shape), device=p.device).data
    return module


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def dev(array):
    return mt.tensor(np.asarray(array)).data


@st.composite
def padded_ids(draw, vocab, batch, length, pad_id=0):
    """(B, L) ids in [1, vocab), right-padded with ``pad_id``; a row may be all padding."""
    ids = np.array(draw(st.lists(st.lists(st.integers(1, vocab - 1), min_size=length,
                                          max_size=length), min_size=batch, max_size=batch)))
    for row in ids:
        row[draw(st.integers(0, length)):] = pad_id
    return ids


def key_mask(data, batch, length):
    lengths = np.array(data.draw(st.lists(st.integers(0, length), min_size=batch,
                                          max_size=batch)))
    return np.arange(length)[None, None, None, :] < lengths[:, None, None, None]


# ---- layers ------------------------------------------------------------------------------

@given(seed=seeds, dim=st.integers(1, 5), eps=epsilons, shift=st.booleans())
def test_layer_norm_and_rms_norm(seed, dim, eps, shift):
    x = normal(seed, 2, 3, dim) * 2 + 1
    norm = prepared(nn.LayerNorm(dim, eps, bias=shift), seed)
    close(norm(mt.tensor(x)), ref.layer_norm(norm, x, eps))
    rms = prepared(nn.RMSNorm(dim, eps), seed)
    close(rms(mt.tensor(x)), ref.rms_norm(rms, x, eps))


@given(seed=seeds, start=st.integers(0, 3), length=st.integers(1, 4), dim=st.integers(1, 5))
def test_embeddings_and_positions(seed, start, length, dim):
    table = prepared(nn.Embedding(6, dim, padding_idx=2), seed)
    ids = np.random.default_rng(seed).integers(0, 6, (2, length))
    close(table(dev(ids)), ref.weight(table.weight)[ids])

    x = normal(seed, 2, length, dim)
    sinusoidal = nn.SinusoidalPositionalEncoding(dim, max_len=8)  # stored in float32
    np.testing.assert_allclose(sinusoidal(mt.tensor(x), start).numpy(),
                               x + ref.sinusoids(length, dim, start), rtol=0, atol=1e-7)
    learned = prepared(nn.LearnedPositionalEmbedding(8, dim), seed)
    close(learned(mt.tensor(x), start),
          x + ref.weight(learned.weight)[start:start + length])


@given(seed=seeds, heads=st.integers(1, 5), length=st.integers(1, 12),
       bidirectional=st.booleans())
def test_relative_position_bias_and_alibi(seed, heads, length, bidirectional):
    # few buckets and a short max_distance, so that short lengths reach the log buckets
    t5 = prepared(nn.RelativePositionBias(heads, num_buckets=8, max_distance=10,
                                          bidirectional=bidirectional), seed)
    close(t5(length), ref.t5_bias(t5, length, bidirectional, num_buckets=8, max_distance=10))
    alibi = mt.masks.alibi_bias(heads, length, dtype=np.float64)
    np.testing.assert_allclose(mt.tensor(alibi).numpy(), ref.alibi(heads, length), rtol=1e-14)


@given(seed=seeds, d_ff=st.integers(1, 5), act=st.sampled_from(["relu", "gelu", "swiglu",
                                                                 "geglu"]), bias=st.booleans())
def test_feed_forward(seed, d_ff, act, bias):
    ff = prepared(nn.FeedForward(4, d_ff, dropout=0.1, activation=act, bias=bias), seed)
    x = normal(seed, 2, 3, 4) * 2
    close(ff(mt.tensor(x)), ref.feed_forward(ff, x, act))


@given(seed=seeds, heads=st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 1), (4, 2)]),
       lq=st.integers(1, 4), lk=st.integers(1, 4), self_attention=st.booleans(),
       rotary=st.sampled_from([None, 10000.0, 3.0]), with_bias=st.booleans(), data=st.data())
def test_multi_head_attention(seed, heads, lq, lk, self_attention, rotary, with_bias, data):
    (num_heads, kv_heads), d = heads, 8
    rotary = rotary if self_attention else None  # RoPE is for self-attention
    mha = prepared(nn.MultiHeadAttention(d, num_heads, dropout=0.2, num_kv_heads=kv_heads,
                                         rotary_base=rotary), seed)
    q, k, v = normal(seed, 2, lq, d), normal(seed + 1, 2, lk, d), normal(seed + 2, 2, lk, d)
    mask = key_mask(data, 2, lk)
    if self_attention:  # under a causal mask and padding
        k, v, mask = q, q, ref.causal(lq) & key_mask(data, 2, lq)
    bias = normal(seed + 3, 1, num_heads, lq, k.shape[1]) if with_bias else None
    out = mha(mt.tensor(q), mt.tensor(k), mt.tensor(v), dev(mask),
              bias=None if bias is None else mt.tensor(bias))
    close(out, ref.attention(mha, q, k, v, mask, num_heads, kv_heads, bias, rotary))


# ---- blocks and stacks -------------------------------------------------------------------

block_settings = st.fixed_dictionaries(dict(
    norm_first=st.booleans(), activation_name=activations, num_heads=st.sampled_from([1, 2]),
    eps=epsilons))


def block_args(s):
    return dict(d_model=4, num_heads=s["num_heads"], d_ff=6, dropout=0.1,
                activation=s["activation_name"], norm_first=s["norm_first"],
                layer_norm_eps=s["eps"])


@given(seed=seeds, s=block_settings, length=st.integers(1, 4), data=st.data())
def test_encoder_layer_and_encoder(seed, s, length, data):
    x, mask = normal(seed, 2, length, 4), key_mask(data, 2, length)
    layer = prepared(nn.EncoderLayer(**block_args(s)), seed)
    close(layer(mt.tensor(x), dev(mask)), ref.encoder_layer(layer, x, mask, **s))
    stack = prepared(nn.Encoder(2, **block_args(s)), seed)
    close(stack(mt.tensor(x), dev(mask)), ref.encoder(stack, x, mask, **s))


@given(seed=seeds, s=block_settings, norm=st.sampled_from(["layer", "rms"]),
       gated=st.sampled_from(["swiglu", "geglu"]), kv_heads=st.sampled_from([1, 2]),
       bias=st.booleans(), rotary=st.sampled_from([None, 100.0]), length=st.integers(1, 4))
def test_encoder_layer_options(seed, s, norm, gated, kv_heads, bias, rotary, length):
    """The LLaMA-style options: RMSNorm, a gated feed-forward, grouped-query attention,
    no biases, RoPE (here under a causal mask, as in a decoder-only model)."""
    s = {**s, "num_heads": 2, "activation_name": gated}
    layer = prepared(nn.EncoderLayer(**block_args(s), norm=norm, num_kv_heads=kv_heads,
                                     bias=bias, rotary_base=rotary), seed)
    x, mask = normal(seed, 2, length, 4), ref.causal(length)
    close(layer(mt.tensor(x), dev(mask)),
          ref.encoder_layer(layer, x, mask, **s, norm=norm, num_kv_heads=kv_heads,
                            rotary_base=rotary))


@given(seed=seeds, s=block_settings, lt=st.integers(1, 4), ls=st.integers(1, 4),
       data=st.data())
def test_decoder_layer_and_decoder(seed, s, lt, ls, data):
    x, memory = normal(seed, 2, lt, 4), normal(seed + 1, 2, ls, 4)
    self_mask, memory_mask = ref.causal(lt), key_mask(data, 2, ls)
    args = (mt.tensor(x), mt.tensor(memory), dev(self_mask), dev(memory_mask))
    layer = prepared(nn.DecoderLayer(**block_args(s)), seed)
    close(layer(*args), ref.decoder_layer(layer, x, memory, self_mask, memory_mask, **s))
    stack = prepared(nn.Decoder(2, **block_args(s)), seed)
    close(stack(*args), ref.decoder(stack, x, memory, self_mask, memory_mask, **s))


# ---- models ------------------------------------------------------------------------------

memory_options = st.sampled_from([{}, dict(attention="blockwise", attention_block_size=2),
                                  dict(recompute=True)])


@settings(max_examples=8)
@given(seed=seeds, norm_first=st.booleans(), act=activations, tie=st.booleans(),
       pad=st.sampled_from([0, None]), positions=st.sampled_from(["sinusoidal", "t5"]),
       tgt_len=st.sampled_from([3, 11]), memory=memory_options, data=st.data())
def test_transformer(seed, norm_first, act, tie, pad, positions, tgt_len, memory, data):
    model = prepared(nn.Transformer(nn.TransformerConfig(
        src_vocab_size=7, tgt_vocab_size=9, d_model=4, num_heads=2, num_encoder_layers=2,
        num_decoder_layers=2, d_ff=6, activation=act, norm_first=norm_first,
        layer_norm_eps=1e-3, max_len=12, pad_id=pad, tie_output_embedding=tie,
        positions=positions, **memory)), seed)
    src, tgt = data.draw(padded_ids(7, 2, 4)), data.draw(padded_ids(9, 2, tgt_len))
    tgt[:, 0] = 1
    close(model(dev(src), dev(tgt)), ref.transformer(model, src, tgt))


def test_transformer_t5_long_target():
    """11 target tokens reach T5's logarithmic buckets (offsets of 8 and more), where the
    decoder's causal buckets differ from the encoder's bidirectional ones."""
    model = prepared(nn.Transformer(nn.TransformerConfig(
        src_vocab_size=7, tgt_vocab_size=9, d_model=4, num_heads=2, num_encoder_layers=1,
        num_decoder_layers=1, d_ff=6, max_len=12, positions="t5")), 0)
    src = np.array([[1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]])
    tgt = np.array([[1, 8, 7, 6, 5, 4, 3, 2, 1, 2, 3]])
    close(model(dev(src), dev(tgt)), ref.transformer(model, src, tgt))


gpt_variants = st.fixed_dictionaries(dict(
    positions=st.sampled_from(["learned", "sinusoidal", "rope", "alibi", "t5", "none"]),
    norm=st.sampled_from(["layer", "rms"]),
    activation=st.sampled_from(["relu", "gelu", "swiglu", "geglu"]),
    num_kv_heads=st.sampled_from([None, 1]), bias=st.booleans(), tie_weights=st.booleans()))


@settings(max_examples=12)
@given(seed=seeds, length=st.integers(1, 5), variant=gpt_variants, memory=memory_options)
def test_gpt(seed, length, variant, memory):
    model = prepared(nn.GPT(nn.GPTConfig(vocab_size=11, max_len=6, d_model=4, num_heads=2,
                                         num_layers=2, d_ff=6, layer_norm_eps=1e-3,
                                         **variant, **memory)), seed)
    ids = np.random.default_rng(seed).integers(0, 11, (2, length))
    close(model(dev(ids)), ref.gpt(model, ids))


@settings(max_examples=8)
@given(seed=seeds, types=st.sampled_from([0, 2]), explicit_mask=st.booleans(),
       memory=memory_options, data=st.data())
def test_encoder_classifier(seed, types, explicit_mask, memory, data):
    model = prepared(nn.EncoderClassifier(nn.EncoderClassifierConfig(
        vocab_size=13, max_len=6, type_vocab_size=types, d_model=4, num_heads=2,
        num_layers=2, d_ff=6, layer_norm_eps=1e-3, num_classes=3, **memory)), seed)
    ids = data.draw(padded_ids(13, 2, 5))
    ids[:, 0] = 1  # [CLS]
    token_types = (np.arange(5) >= 2).astype(np.int64)[None].repeat(2, 0) if types else None
    attention_mask = None
    if explicit_mask:  # Hugging Face's 0/1 mask, which need not follow pad_id
        attention_mask = (np.arange(5)[None] < np.array([[2], [5]])).astype(np.int64)
    kwargs = dict(attention_mask=attention_mask, token_type_ids=token_types)
    device_kwargs = {k: None if v is None else dev(v) for k, v in kwargs.items()}
    close(model.encode(dev(ids), **device_kwargs),
          ref.encoder_classifier_hidden(model, ids, **kwargs))
    close(model(dev(ids), **device_kwargs), ref.encoder_classifier(model, ids, **kwargs))


@settings(max_examples=6)
@given(seed=seeds, explicit_mask=st.booleans(), data=st.data())
def test_bert_heads(seed, explicit_mask, data):
    bert = nn.EncoderClassifier(nn.EncoderClassifierConfig(
        vocab_size=13, max_len=6, d_model=4, num_heads=2, num_layers=1, d_ff=6,
        layer_norm_eps=1e-3))
    ids = data.draw(padded_ids(13, 2, 5))
    mask = (np.arange(5)[None] < np.array([[2], [5]])).astype(np.int64) if explicit_mask \
        else None
    mlm = prepared(nn.MaskedLanguageModel(bert), seed)
    close(mlm(dev(ids), None if mask is None else dev(mask)), ref.masked_lm(mlm, ids, mask))
    tagger = prepared(nn.TokenClassifier(bert, 3, dropout=0.1), seed)
    close(tagger(dev(ids), None if mask is None else dev(mask)),
          ref.token_classifier(tagger, ids, mask))


@settings(max_examples=6)
@given(seed=seeds, patch=st.sampled_from([2, 3]), channels=st.integers(1, 2))
def test_vit(seed, patch, channels):
    model = prepared(nn.ViT(nn.ViTConfig(image_size=6, patch_size=patch, channels=channels,
                                         num_classes=3, d_model=4, num_heads=2, num_layers=2,
                                         d_ff=6, dropout=0.1, layer_norm_eps=1e-3)), seed)
    images = normal(seed, 2, channels, 6, 6)
    close(model(mt.tensor(images)), ref.vit(model, images))


@given(seed=seeds, n_in=st.integers(1, 6), n_out=st.integers(1, 4), bias=st.booleans())
def test_quantized_linear(seed, n_in, n_out, bias):
    layer = prepared(nn.Linear(n_in, n_out, bias), seed)
    layer.weight.data[0] = 0  # a zero row keeps the scale 1
    x = normal(seed, 2, 3, n_in)
    close(nn.QuantizedLinear(layer)(mt.tensor(x)), ref.quantized_linear(layer, x))
