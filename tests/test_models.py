"""The whole models: Transformer (encoder-decoder), GPT and EncoderClassifier. End-to-end
float64 gradient checks, masking invariances, weight tying, state dicts, the KV cache
against full recomputation, and argument errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn
from strategies import host

seeds = st.integers(0, 2**32 - 1)


def dev(array):
    """Host ids or masks on the current backend (a model on the GPU refuses host arrays)."""
    return mt.tensor(np.asarray(array)).data


def tiny_transformer(seed=0, **overrides):
    mt.manual_seed(seed)
    config = dict(src_vocab_size=7, tgt_vocab_size=9, d_model=4, num_heads=2,
                  num_encoder_layers=1, num_decoder_layers=1, d_ff=6, dropout=0.0, max_len=16)
    return nn.Transformer(nn.TransformerConfig(**{**config, **overrides}))


def tiny_gpt(seed=0, **overrides):
    mt.manual_seed(seed)
    config = dict(vocab_size=11, max_len=12, d_model=8, num_heads=2, num_layers=2,
                  dropout=0.0)
    return nn.GPT(nn.GPTConfig(**{**config, **overrides}))


def tiny_bert(seed=0, **overrides):
    mt.manual_seed(seed)
    config = dict(vocab_size=13, max_len=10, d_model=8, num_heads=2, num_layers=2, d_ff=12,
                  dropout=0.0, num_classes=3)
    return nn.EncoderClassifier(nn.EncoderClassifierConfig(**{**config, **overrides}))


@st.composite
def padded_ids(draw, vocab, max_batch=2, max_len=4, pad_id=0):
    """(B, L) ids in [1, vocab) with right padding; every row keeps one real token."""
    batch, length = draw(st.integers(1, max_batch)), draw(st.integers(1, max_len))
    ids = np.array(draw(st.lists(st.lists(st.integers(1, vocab - 1), min_size=length,
                                          max_size=length), min_size=batch, max_size=batch)))
    for row in ids:
        row[draw(st.integers(1, length)):] = pad_id
    return ids


def check_all_grads(fn, model, directions):
    assert mt.gradcheck(lambda *_: fn(), model.parameters(), directions=directions)


# ---- Transformer ---------------------------------------------------------------------

@settings(max_examples=6)
@given(seed=seeds, src=padded_ids(7), tgt=padded_ids(9), norm_first=st.booleans(),
       tie=st.booleans(), positions=st.sampled_from(["sinusoidal", "t5"]))
def test_transformer_gradients_end_to_end(seed, src, tgt, norm_first, tie, positions):
    tgt = np.resize(tgt, (src.shape[0], tgt.shape[1]))
    tgt[:, 0] = 1
    model = tiny_transformer(seed, norm_first=norm_first, tie_output_embedding=tie,
                             positions=positions)
    model.to(dtype=np.float64)
    check_all_grads(lambda: model(dev(src), dev(tgt)), model, directions=2)


def test_transformer_shapes_dtype_and_methods():
    model = tiny_transformer()
    src, tgt = dev([[1, 2, 3, 0], [4, 5, 0, 0]]), dev([[1, 2, 3], [1, 4, 0]])
    logits = model(src, tgt)
    assert logits.shape == (2, 3, 9) and logits.dtype == np.float32
    memory = model.encode(src)
    assert memory.shape == (2, 4, 4)
    np.testing.assert_array_equal(
        model.decode(memory, tgt, model.source_mask(src)).numpy(), logits.numpy())


@settings(max_examples=8)
@given(seed=seeds, src=padded_ids(7), extra=st.integers(1, 3))
def test_transformer_ignores_padding(seed, src, extra):
    """Appending padding to the source, or changing later target tokens, leaves the
    logits of the real positions unchanged."""
    model = tiny_transformer(seed).to(dtype=np.float64)
    tgt = np.array([[1, 2, 3, 4]] * src.shape[0])
    logits = model(dev(src), dev(tgt)).numpy()
    longer = np.pad(src, ((0, 0), (0, extra)))
    np.testing.assert_allclose(model(dev(longer), dev(tgt)).numpy(), logits, rtol=1e-10,
                               atol=1e-12)
    changed = tgt.copy()
    changed[:, 2:] = 5
    np.testing.assert_allclose(model(dev(src), dev(changed)).numpy()[:, :2], logits[:, :2],
                               rtol=1e-10, atol=1e-12)


def test_weight_tying_and_shared_embeddings():
    model = tiny_transformer(tie_output_embedding=True)
    assert model.generator.weight is model.tgt_embedding.weight
    names = [n for n, _ in model.named_parameters()]
    assert "generator.weight" not in names and "tgt_embedding.weight" in names
    untied = tiny_transformer(tie_output_embedding=False)
    assert len(untied.parameters()) == len(model.parameters()) + 1

    # The tied gradient is the sum of what the embedding and the output layer get.
    src, tgt = dev([[1, 2, 3]]), dev([[1, 2, 3, 4]])
    untied.load_state_dict({**model.state_dict(),
                            "generator.weight": model.generator.weight.numpy()})
    model(src, tgt).sum().backward()
    untied(src, tgt).sum().backward()
    np.testing.assert_allclose(
        host(model.tgt_embedding.weight.grad),
        host(untied.tgt_embedding.weight.grad) + host(untied.generator.weight.grad),
        rtol=1e-5, atol=1e-6)

    shared = tiny_transformer(tgt_vocab_size=7, share_embeddings=True)
    assert shared.src_embedding is shared.tgt_embedding is not None
    assert shared.generator.weight is shared.src_embedding.weight
    with pytest.raises(ValueError, match="share_embeddings needs src_vocab_size == "
                                         "tgt_vocab_size, got 7 and 9"):
        tiny_transformer(share_embeddings=True)


def test_state_dict_round_trip_keeps_outputs_and_ties():
    src, tgt = dev([[1, 2, 3]]), dev([[1, 2]])
    a, b = tiny_transformer(seed=1), tiny_transformer(seed=2)
    assert not np.allclose(a(src, tgt).numpy(), b(src, tgt).numpy())
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(src, tgt).numpy(), b(src, tgt).numpy())
    assert b.generator.weight is b.tgt_embedding.weight
    gpt, other = tiny_gpt(seed=1), tiny_gpt(seed=2)
    other.load_state_dict(gpt.state_dict())
    np.testing.assert_array_equal(gpt([[1, 2, 3]]).numpy(), other([[1, 2, 3]]).numpy())


@settings(max_examples=8)
@given(seed=seeds, src=padded_ids(7, max_batch=3), steps=st.integers(1, 5),
       norm_first=st.booleans(), positions=st.sampled_from(["sinusoidal", "t5"]))
def test_transformer_cached_decoding_matches_full_decoding(seed, src, steps, norm_first,
                                                           positions):
    model = tiny_transformer(seed, norm_first=norm_first, positions=positions)
    model.to(dtype=np.float64)
    src, tgt = dev(src), dev(np.random.default_rng(seed).integers(1, 9, (len(src), steps)))
    src_mask = model.source_mask(src)
    memory = model.encode(src, src_mask)
    full = model.decode(memory, tgt, src_mask).numpy()
    cache = model.new_cache()
    with mt.no_grad():
        steps_out = [model.decode(memory, tgt[:, t:t + 1], src_mask, cache=cache).numpy()
                     for t in range(steps)]
    assert len(cache) == steps
    np.testing.assert_allclose(np.concatenate(steps_out, axis=1), full, rtol=1e-9,
                               atol=1e-12)


def test_transformer_argument_errors():
    model = tiny_transformer()
    src, tgt = dev([[1, 2, 3]]), dev([[1, 2]])
    with pytest.raises(ValueError, match=r"src contains id 7, outside the vocabulary \[0, 7\)"):
        model(dev([[1, 7]]), tgt)
    with pytest.raises(ValueError, match="tgt contains id -1"):
        model(src, dev([[1, -1]]))
    with pytest.raises(TypeError, match="src must be integer token ids, got float64"):
        model(dev([[1.0, 2.0]]), tgt)
    with pytest.raises(ValueError, match=r"tgt has shape \(2,\), expected \(B, L\)"):
        model(src, dev([1, 2]))
    with pytest.raises(ValueError, match=r"src_mask has shape \(1, 1, 3, 3\), expected one that "
                                         r"broadcasts to \(B, H, Lq, Lk\) = \(1, 2, 1, 3\)"):
        model(src, tgt, src_mask=np.ones((1, 1, 3, 3), bool))
    with pytest.raises(ValueError, match=r"tgt_mask has shape \(3, 3\)"):
        model(src, tgt, tgt_mask=np.ones((3, 3), bool))
    with pytest.raises(TypeError, match="tgt_mask must be a boolean array"):
        model(src, tgt, tgt_mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="memory has batch size 1 but tgt has 2"):
        model.decode(model.encode(src), dev([[1], [2]]))


# ---- GPT -----------------------------------------------------------------------------

@settings(max_examples=6)
@given(seed=seeds, length=st.integers(1, 4))
def test_gpt_gradients(seed, length):
    model = tiny_gpt(seed, d_model=4, num_layers=1).to(dtype=np.float64)
    ids = dev(np.random.default_rng(seed).integers(0, 11, (2, length)))
    check_all_grads(lambda: model(ids), model, directions=2)


@given(seed=seeds, chunks=st.lists(st.integers(1, 3), min_size=1, max_size=4))
def test_gpt_cache_matches_full_recomputation(seed, chunks):
    model = tiny_gpt(seed).to(dtype=np.float64).eval()
    ids = dev(np.random.default_rng(seed).integers(0, 11, (2, sum(chunks))))
    full = model(ids).numpy()
    cache, parts, past = model.new_cache(), [], 0
    with mt.no_grad():
        for n in chunks:
            parts.append(model(ids[:, past:past + n], cache=cache).numpy())
            past += n
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-9, atol=1e-12)


def test_gpt_is_causal_tied_and_bounded():
    model = tiny_gpt()
    assert model.lm_head.weight is model.token_embedding.weight and model.lm_head.bias is None
    ids, changed = dev([[1, 2, 3, 4, 5]]), dev([[1, 2, 3, 9, 9]])
    np.testing.assert_allclose(model(changed).numpy()[:, :3], model(ids).numpy()[:, :3],
                               rtol=1e-6)
    assert not np.allclose(model(changed).numpy()[:, 3:], model(ids).numpy()[:, 3:])
    with pytest.raises(ValueError, match="GPT: 0 cached \\+ 13 new positions exceed "
                                         "max_len=12"):
        model(dev(np.ones((1, 13), np.int64)))
    cache = model.new_cache()
    model(dev(np.ones((1, 10), np.int64)), cache=cache)
    with pytest.raises(ValueError, match="10 cached \\+ 3 new positions"):
        model(dev(np.ones((1, 3), np.int64)), cache=cache)


def test_gpt_learns_a_sequence():
    """A few plain gradient steps on one sequence lower the loss substantially."""
    model = tiny_gpt(d_model=16, num_layers=1)
    seq = dev([[1, 2, 3, 4, 5, 6, 7, 8]])
    losses = []
    for _ in range(30):
        loss = mt.functional.cross_entropy(model(seq[:, :-1]), seq[:, 1:])
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.1 * p.grad
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_train_and_eval_modes():
    model = tiny_gpt(dropout=0.5)
    ids = dev([[1, 2, 3]])
    assert not np.allclose(model(ids).numpy(), model(ids).numpy())
    model.eval()
    np.testing.assert_array_equal(model(ids).numpy(), model(ids).numpy())


# ---- EncoderClassifier ---------------------------------------------------------------

@settings(max_examples=6)
@given(seed=seeds, ids=padded_ids(13))
def test_classifier_gradients(seed, ids):
    model = tiny_bert(seed, d_model=4, num_layers=1).to(dtype=np.float64)
    types = dev(np.arange(ids.size).reshape(ids.shape) % 2)
    check_all_grads(lambda: model(dev(ids), token_type_ids=types), model, directions=2)


def test_classifier_outputs_masks_and_names():
    model = tiny_bert().to(dtype=np.float64)
    ids = dev([[2, 5, 7, 0, 0], [3, 4, 6, 8, 9]])
    hidden = model.encode(ids)
    assert hidden.shape == (2, 5, 8)
    pooled = model.pool(hidden).numpy()
    w, b = model.pooler.weight.numpy(), model.pooler.bias.numpy()
    np.testing.assert_allclose(pooled, np.tanh(hidden.numpy()[:, 0] @ w.T + b), rtol=1e-12)
    assert model(ids).shape == (2, 3)

    # The default mask hides pad_id tokens; an explicit (B, L) 0/1 mask does the same.
    np.testing.assert_allclose(model.encode(ids, attention_mask=dev([[1, 1, 1, 0, 0]] + [[1] * 5]))
                               .numpy(), hidden.numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.encode(ids[:1, :3]).numpy(), hidden.numpy()[:1, :3],
                               rtol=1e-10, atol=1e-12)
    # token type 1 changes the result; token type 0 is the default
    assert not np.allclose(model.encode(ids, token_type_ids=dev(np.ones((2, 5), np.int64))).numpy(),
                           hidden.numpy())

    names = [n for n, _ in model.named_parameters()]
    assert names[:5] == ["token_embedding.weight", "position_embedding.weight",
                         "token_type_embedding.weight", "embedding_norm.weight",
                         "embedding_norm.bias"]
    assert "encoder.layers.1.self_attn.w_q.weight" in names
    assert "encoder.layers.0.feed_forward.linear2.bias" in names
    assert names[-4:] == ["pooler.weight", "pooler.bias", "classifier.weight",
                          "classifier.bias"]


def test_classifier_configurations_and_errors():
    encoder_only = tiny_bert(num_classes=None, type_vocab_size=0)
    assert encoder_only.classifier is None and encoder_only.token_type_embedding is None
    ids = dev([[1, 2, 3]])
    assert encoder_only.encode(ids).shape == (1, 3, 8)
    with pytest.raises(ValueError, match="num_classes=None"):
        encoder_only(ids)
    model = tiny_bert()
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 2\), expected ids' "
                                         r"shape \(1, 3\)"):
        model(ids, attention_mask=dev(np.ones((1, 2))))
    with pytest.raises(ValueError, match=r"token_type_ids contains id 2, outside the "
                                         r"vocabulary \[0, 2\)"):
        model(ids, token_type_ids=dev(np.full((1, 3), 2)))
    with pytest.raises(ValueError, match="positions 0..10 requested, but max_len=10"):
        model(dev(np.ones((1, 11), np.int64)))


def test_ids_on_another_device_are_an_error(backend):
    if backend != "cupy":
        pytest.skip("needs two devices")
    with pytest.raises(mt.DeviceError, match="ids is on 'cpu'"):
        tiny_gpt()(np.array([[1, 2]]))
