"""The layers, attention and transformer blocks of minitransformer.nn: values against
closed forms or a plain NumPy reference, float64 gradient checks of every parameter on
hypothesis-drawn shapes and masks, the KV cache, modes, and argument errors."""
import gc
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import reference
from minitransformer import nn
from minitransformer.masks import causal_mask
from strategies import host, leaf

seeds = st.integers(0, 2**32 - 1)


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def float64(module):
    """``module`` in float64 and eval mode (no dropout): ready for a gradient check."""
    return module.to(dtype=np.float64).eval()


def check_grads(fn, inputs, module, directions=None):
    """Gradient-check ``fn`` with respect to ``inputs`` and every parameter of ``module``
    (``fn`` receives the parameters too and ignores them: the module holds them)."""
    assert mt.gradcheck(fn, [*inputs, *module.parameters()], directions=directions)


@st.composite
def key_masks(draw, batch, lk):
    """A padding-style key mask (B, 1, 1, Lk), a row possibly all False."""
    lengths = draw(st.lists(st.integers(0, lk), min_size=batch, max_size=batch))
    return mt.tensor(np.arange(lk)[None, None, None, :] <
                     np.array(lengths)[:, None, None, None])


# ---- basic layers --------------------------------------------------------------------

@given(seed=seeds, lead=st.lists(st.integers(1, 3), max_size=2), n_in=st.integers(1, 4),
       n_out=st.integers(1, 4), bias=st.booleans())
def test_linear(seed, lead, n_in, n_out, bias):
    mt.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias)
    w = host(layer.weight.data)
    assert w.shape == (n_out, n_in) and w.dtype == np.float32
    assert np.abs(w).max() <= 1 / math.sqrt(n_in)
    float64(layer)
    x = leaf(normal(seed, *lead, n_in))
    expected = host(x.data) @ host(layer.weight.data).T + (
        host(layer.bias.data) if bias else 0)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-12, atol=1e-12)
    check_grads(lambda x, *_: layer(x), [x], layer)


def test_initialisation_is_seeded_and_float32():
    mt.manual_seed(3)
    a = nn.Linear(5, 4)
    mt.manual_seed(3)
    b = nn.Linear(5, 4)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert not np.array_equal(a.weight.numpy(), nn.Linear(5, 4).weight.numpy())
    assert all(p.dtype == np.float32 for p in nn.MultiHeadAttention(8, 2).parameters())
    # The documented distributions: U(-1/sqrt(in), 1/sqrt(in)) fills its whole range
    # (std bound/sqrt(3)); an embedding table is N(0, std^2).
    w = nn.Linear(100, 50).weight.numpy()
    assert 0.099 < np.abs(w).max() <= 0.1 and abs(w.std() - 0.1 / math.sqrt(3)) < 0.003
    table = nn.Embedding(100, 50, std=0.02).weight.numpy()
    assert abs(table.std() - 0.02) < 0.001 and abs(table.mean()) < 0.001


@given(seed=seeds, data=st.data())
def test_embedding_accumulates_repeated_ids(seed, data):
    mt.manual_seed(seed)
    table = float64(nn.Embedding(5, 3))
    ids = np.array(data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=8)))
    ids = ids.reshape(-1, 1) if len(ids) % 2 else ids.reshape(2, -1)
    np.testing.assert_array_equal(table(ids).numpy(), host(table.weight.data)[ids])
    check_grads(lambda *_: table(ids), [], table)


def test_embedding_padding_row_keeps_its_value_and_gets_no_gradient():
    table = nn.Embedding(4, 3, padding_idx=1)
    np.testing.assert_array_equal(table.weight.numpy()[1], 0)
    table.weight.data[1] = 7.0  # e.g. loaded from a checkpoint
    ids = np.array([[1, 2, 1, 3]])
    out = table(ids)
    np.testing.assert_array_equal(out.numpy()[0, 0], 7.0)
    out.backward(np.ones(out.shape, np.float32))
    grad = host(table.weight.grad)
    np.testing.assert_array_equal(grad[1], 0)
    np.testing.assert_array_equal(grad[2], 1)
    np.testing.assert_array_equal(table([[1, 2]]).numpy(), out.numpy()[:, :2])  # a list


@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_layer_norm(seed, shape):
    mt.manual_seed(seed)
    norm = float64(nn.LayerNorm(shape[-1]))
    x = leaf(normal(seed, *shape) * 3 + 1)
    if shape[-1] > 1:
        out = norm(x).numpy()
        np.testing.assert_allclose(out.mean(-1), 0, atol=1e-12)
        variance = x.numpy().var(-1)  # eps keeps the output's variance just under 1
        np.testing.assert_allclose(out.var(-1), variance / (variance + norm.eps), rtol=1e-9)
    norm.weight.data[:] = mt.tensor(normal(seed + 1, shape[-1])).data  # non-trivial
    norm.bias.data[:] = mt.tensor(normal(seed + 2, shape[-1])).data  # scale and shift
    check_grads(lambda x, *_: norm(x), [x], norm)


def test_dropout_modes():
    drop = nn.Dropout(0.5)
    x = mt.tensor(np.ones((200, 50), np.float32))
    y = drop(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    assert drop.eval()(x) is x
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.0)


def test_sinusoidal_encoding_matches_the_paper():
    pe = nn.SinusoidalPositionalEncoding(6, max_len=10)
    x = mt.tensor(np.zeros((2, 4, 6), np.float32))
    table = pe(x, start=3).numpy()[0]
    pos, i = np.arange(3, 7)[:, None], np.arange(3)[None, :]
    angle = pos / 10000 ** (2 * i / 6)
    np.testing.assert_allclose(table[:, 0::2], np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(table[:, 1::2], np.cos(angle), atol=1e-6)
    assert pe.parameters() == [] and pe.state_dict() == {}
    assert pe.to(dtype=np.float64).table.dtype == np.float64  # a buffer moves with .to
    with pytest.raises(ValueError, match="max_len=10"):
        pe(x, start=7)


@given(seed=seeds, length=st.integers(1, 4), start=st.integers(0, 2))
def test_learned_positions(seed, length, start):
    mt.manual_seed(seed)
    pos = float64(nn.LearnedPositionalEmbedding(6, 3))
    x = leaf(normal(seed, 2, length, 3))
    np.testing.assert_allclose(pos(x, start).numpy(),
                               host(x.data) + host(pos.weight.data)[start:start + length])
    check_grads(lambda x, *_: pos(x, start), [x], pos)


# ---- attention -----------------------------------------------------------------------

@st.composite
def attention_cases(draw):
    batch, heads, head_dim = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(
        st.integers(1, 3))
    kv_heads = draw(st.sampled_from([n for n in range(1, heads + 1) if heads % n == 0]))
    lq, lk = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    cross = draw(st.booleans())
    lk = lk if cross else lq
    kind = draw(st.sampled_from(["none", "padding", "causal"] if not cross else
                                ["none", "padding"]))
    mask = {"none": None, "causal": causal_mask(lq)}.get(kind)
    if kind == "padding":
        mask = draw(key_masks(batch, lk))
    return batch, heads, kv_heads, head_dim, lq, lk, cross, mask, draw(seeds)


@given(case=attention_cases())
def test_multi_head_attention(case):
    batch, heads, kv_heads, head_dim, lq, lk, cross, mask, seed = case
    mt.manual_seed(seed)
    d = heads * head_dim
    mha = float64(nn.MultiHeadAttention(d, heads, num_kv_heads=kv_heads))
    q = leaf(normal(seed, batch, lq, d))
    kv = leaf(normal(seed + 1, batch, lk, d)) if cross else q
    out = mha(q, kv, kv, mask)
    mask_array = None if mask is None else host(getattr(mask, "data", mask))
    np.testing.assert_allclose(out.numpy(), reference.attention(
        mha, *(host(t.data) for t in (q, kv, kv)), mask_array, heads, kv_heads),
        rtol=1e-10, atol=1e-12)

    weights = host(mha.attention_weights.data)
    assert weights.shape == (batch, heads, lq, lk) and not mha.attention_weights.requires_grad
    allowed = np.broadcast_to(True if mask is None else host(getattr(mask, "data", mask)),
                              weights.shape)
    np.testing.assert_array_equal(weights[~allowed], 0)
    np.testing.assert_allclose(weights.sum(-1), allowed.any(-1).astype(float), rtol=1e-12)

    if cross:
        check_grads(lambda q, kv, *_: mha(q, kv, kv, mask), [q, kv], mha, directions=3)
    else:
        check_grads(lambda x, *_: mha(x, x, x, mask), [q], mha, directions=3)


def test_fully_masked_query_gives_zero_attention_not_nan():
    mha = nn.MultiHeadAttention(4, 2)
    x = mt.tensor(np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32))
    mask = mt.tensor(np.array([False, False, False])[None, None, None, :])
    out = mha(x, x, x, mask).numpy()
    # every value is zero, so what is left is the output projection's bias
    np.testing.assert_allclose(out, np.broadcast_to(mha.w_o.bias.numpy(), out.shape))


@given(seed=seeds, chunks=st.lists(st.integers(1, 3), min_size=1, max_size=4),
       kv_heads=st.sampled_from([1, 2, 4]))
def test_kv_cache_matches_full_self_attention(seed, chunks, kv_heads):
    mt.manual_seed(seed)
    mha = float64(nn.MultiHeadAttention(8, 4, num_kv_heads=kv_heads))
    length = sum(chunks)
    x = leaf(normal(seed, 2, length, 8), requires_grad=False)
    full = mha(x, x, x, causal_mask(length)).numpy()
    cache, parts, past = nn.AttentionCache(), [], 0
    for n in chunks:
        step = x[:, past:past + n]
        parts.append(mha(step, step, step, causal_mask(n, past + n), cache=cache).numpy())
        past += n
    assert len(cache) == length and cache.keys.shape == (2, kv_heads, length, 2)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-10, atol=1e-12)


def test_static_cache_computes_cross_attention_keys_once():
    mha = nn.MultiHeadAttention(4, 2)
    rng = np.random.default_rng(1)
    memory = mt.tensor(rng.standard_normal((2, 5, 4)).astype(np.float32))
    query = mt.tensor(rng.standard_normal((2, 1, 4)).astype(np.float32))
    cache = nn.AttentionCache(static=True)
    first = mha(query, memory, memory, cache=cache).numpy()
    keys = cache.keys
    again = mha(query, None, None, cache=cache).numpy()  # memory is not needed any more
    assert cache.keys is keys and len(cache) == 5
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, mha(query, memory, memory).numpy(), rtol=1e-6)


def test_kv_cache_select_reorders_the_batch():
    cache = nn.KVCache(2, cross_attention=True)
    for c in cache.self_attention + cache.cross_attention:
        c.update(mt.tensor(np.arange(3.0)[:, None, None, None] * np.ones((3, 1, 2, 1))),
                 mt.tensor(np.zeros((3, 1, 2, 1))))
    cache.select(mt.tensor([2, 2, 0]))
    for c in cache.self_attention + cache.cross_attention:
        np.testing.assert_array_equal(c.keys.numpy()[:, 0, 0, 0], [2, 2, 0])
    assert len(cache) == 2


def elsewhere(x):
    """``x`` claiming to live on the other device: tests the device checks without one."""
    other = "gpu" if x.device == "cpu" else "cpu"
    return type("Elsewhere", (mt.Tensor,), {"device": other})(x.data)


def test_attention_argument_errors():
    mha = nn.MultiHeadAttention(64, 8)
    x = mt.tensor(np.zeros((2, 3, 64), np.float32))
    with pytest.raises(ValueError, match="query has last dim 48, expected d_model=64"):
        mha(mt.tensor(np.zeros((2, 3, 48), np.float32)), x, x)
    with pytest.raises(ValueError, match=r"key has shape \(3, 64\), expected \(B, L, d_model\)"):
        mha(x, x[0], x)
    with pytest.raises(ValueError, match="num_heads=5 must be a positive integer dividing "
                                         "d_model=64"):
        nn.MultiHeadAttention(64, 5)
    with pytest.raises(ValueError, match="num_kv_heads=3 must be a positive integer dividing "
                                         "num_heads=8"):
        nn.MultiHeadAttention(64, 8, num_kv_heads=3)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 1, 1, 4\), expected one that "
                                         r"broadcasts to \(B, H, Lq, Lk\) = \(2, 8, 3, 3\)"):
        mha(x, x, x, np.ones((2, 1, 1, 4), bool))
    with pytest.raises(TypeError, match="mask must be a boolean array .* got int64"):
        mha(x, x, x, mt.tensor(np.ones((2, 1, 1, 3), np.int64)))
    with pytest.raises(ValueError, match="key has length 3 but value has 2"):
        mha(x, x, x[:, :2])
    with pytest.raises(mt.DeviceError, match="query is on"):
        mha(elsewhere(x), x, x)


# ---- blocks --------------------------------------------------------------------------

@st.composite
def block_cases(draw):
    return dict(batch=draw(st.integers(1, 2)), heads=draw(st.integers(1, 2)),
                head_dim=draw(st.integers(1, 2)), d_ff=draw(st.integers(1, 4)),
                lt=draw(st.integers(1, 3)), ls=draw(st.integers(1, 3)),
                norm_first=draw(st.booleans()), activation=draw(st.sampled_from(
                    ["relu", "gelu"])), seed=draw(seeds))


@settings(max_examples=8)
@given(case=block_cases(), data=st.data())
def test_feed_forward_and_encoder_layer(case, data):
    mt.manual_seed(case["seed"])
    d = case["heads"] * case["head_dim"]
    ff = float64(nn.FeedForward(d, case["d_ff"], 0.0, case["activation"]))
    x = leaf(normal(case["seed"], case["batch"], case["lt"], d))
    check_grads(lambda x, *_: ff(x), [x], ff)

    layer = float64(nn.EncoderLayer(d, case["heads"], case["d_ff"], 0.0, case["activation"],
                                    case["norm_first"]))
    mask = data.draw(key_masks(case["batch"], case["lt"]))
    check_grads(lambda x, *_: layer(x, mask), [x], layer, directions=2)


@settings(max_examples=8)
@given(case=block_cases(), data=st.data())
def test_decoder_layer(case, data):
    mt.manual_seed(case["seed"])
    d = case["heads"] * case["head_dim"]
    layer = float64(nn.DecoderLayer(d, case["heads"], case["d_ff"], 0.0, case["activation"],
                                    case["norm_first"]))
    x = leaf(normal(case["seed"], case["batch"], case["lt"], d))
    memory = leaf(normal(case["seed"] + 1, case["batch"], case["ls"], d))
    self_mask = causal_mask(case["lt"])
    memory_mask = data.draw(key_masks(case["batch"], case["ls"]))
    check_grads(lambda x, m, *_: layer(x, m, self_mask, memory_mask), [x, memory], layer,
                directions=2)


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_and_their_final_norm(norm_first):
    encoder = nn.Encoder(2, 4, 2, 8, dropout=0.0, norm_first=norm_first)
    decoder = nn.Decoder(2, 4, 2, 8, dropout=0.0, norm_first=norm_first)
    assert (encoder.norm is not None) == norm_first == (decoder.norm is not None)
    x = mt.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32))
    h = x
    for layer in encoder.layers:
        h = layer(h)
    if norm_first:
        h = encoder.norm(h)
    np.testing.assert_allclose(encoder(x).numpy(), h.numpy(), rtol=1e-6)
    assert decoder(x, encoder(x)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        nn.Encoder(0, 4, 2, 8)


def test_dropout_is_active_only_in_training():
    layer = nn.EncoderLayer(8, 2, 16, dropout=0.3)
    x = mt.tensor(np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32))
    assert not np.allclose(layer(x).numpy(), layer(x).numpy())
    layer.eval()
    assert all(not m.training for m in layer.modules())
    np.testing.assert_array_equal(layer(x).numpy(), layer(x).numpy())
    layer.train()
    mt.manual_seed(5)
    first = layer(x).numpy()
    mt.manual_seed(5)
    np.testing.assert_array_equal(layer(x).numpy(), first)


def test_feed_forward_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of .* got 'swish'"):
        nn.FeedForward(4, 8, activation="swish")


def test_float32_stays_float32():
    layer = nn.DecoderLayer(8, 2, 16, dropout=0.1, activation="gelu", norm_first=True)
    x = mt.tensor(np.ones((2, 3, 8), np.float32), requires_grad=True)
    out = layer(x, x, causal_mask(3))
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())


def cycle_garbage_left_by(action):
    """The type names of the objects that ``action()`` leaves in reference cycles, found
    with the collector off, so that nothing is freed behind the test's back."""
    gc.collect()
    flags = gc.get_debug()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # the collector keeps what it finds in gc.garbage
    try:
        action()
        gc.collect()
        return sorted({type(obj).__name__ for obj in gc.garbage})
    finally:
        gc.garbage.clear()
        gc.set_debug(flags)
        gc.enable()


def test_walking_modules_and_training_leave_no_reference_cycles():
    """The README's promise: memory is freed by reference counting alone."""
    model = mt.nn.GPT(mt.nn.GPTConfig(vocab_size=7, max_len=6, d_model=8, num_heads=2,
                                      num_layers=2, dropout=0.1))
    optimizer = mt.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = mt.tensor(np.arange(10).reshape(2, 5) % 7)

    def loss(model, batch):
        return mt.functional.cross_entropy(model(batch[:, :-1]).reshape(-1, 7),
                                           mt.tensor(batch[:, 1:].reshape(-1)))

    def walk_and_train():
        for _ in range(3):
            model.parameters(), model.state_dict(), list(model.named_modules())
            model.zero_grad(), model.train(), model.to(dtype=np.float32)
        mt.train.fit(model, optimizer, lambda: tokens, loss, steps=3, log_every=0)
    assert cycle_garbage_left_by(walk_and_train) == []
