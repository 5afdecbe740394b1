"""BERT's masking (exact invariants; the 15% / 80-10-10 rates within stated tolerances),
the masked-LM head (tied decoder, float64 gradient checks) and the token classifier."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn
from strategies import host

PAD, CLS, SEP, MASK, VOCAB = 0, 1, 2, 3, 50
SPECIAL = (PAD, CLS, SEP)


def dev(array):
    return mt.tensor(np.asarray(array)).data


def sentences(rng, batch, length):
    """[CLS] words [SEP] padding, with random lengths; words are ids 4..49."""
    ids = rng.integers(4, VOCAB, (batch, length))
    ids[:, 0] = CLS
    for row in ids:
        end = rng.integers(2, length + 1)
        row[end - 1], row[end:] = SEP, PAD
    return ids


@settings(max_examples=6)
@given(seed=st.integers(0, 2**32 - 1), p=st.sampled_from([0.15, 0.5, 1.0]))
def test_mask_tokens_invariants(seed, p):
    ids = sentences(np.random.default_rng(seed), 8, 12)
    mt.manual_seed(seed)
    inputs, labels = (host(a) for a in nn.mask_tokens(dev(ids), MASK, SPECIAL, VOCAB, p))
    chosen = labels != -100
    special = np.isin(ids, SPECIAL)
    assert not (chosen & special).any()                      # specials never chosen
    np.testing.assert_array_equal(labels[chosen], ids[chosen])  # labels: the originals
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # the rest untouched
    assert not np.isin(inputs[chosen & (inputs != MASK)], SPECIAL + (MASK,)).any()
    assert inputs.dtype == ids.dtype and inputs.shape == ids.shape
    if p == 1.0:
        np.testing.assert_array_equal(chosen, ~special)


def test_mask_tokens_rates():
    # 40,000 ordinary tokens: the chosen fraction has standard deviation
    # sqrt(.15 * .85 / 40000) = 0.0018, and the 80/10/10 split among ~6000 chosen about
    # 0.005 (0.004 for the tenths); the tolerances are four of those.
    ids = np.random.default_rng(0).integers(4, VOCAB, (200, 200))
    ids[:, :5] = PAD  # specials must not count towards the 15%
    mt.manual_seed(0)
    inputs, labels = (host(a) for a in nn.mask_tokens(dev(ids), MASK, SPECIAL, VOCAB))
    chosen = labels != -100
    assert abs(chosen[:, 5:].mean() - 0.15) < 0.008
    masked = (inputs[chosen] == MASK).mean()
    kept = (inputs[chosen] == ids[chosen]).mean()  # includes random draws of the same id
    assert abs(masked - 0.8) < 0.02
    assert abs(kept - (0.1 + 0.1 / (VOCAB - 4))) < 0.016
    assert abs(1 - masked - kept - 0.1 * (1 - 1 / (VOCAB - 4))) < 0.016


def test_mask_tokens_errors():
    with pytest.raises(ValueError, match=r"mask_tokens: ids must be a \(B, L\) integer "
                                         r"array, got \(3,\) of dtype int64"):
        nn.mask_tokens(dev(np.array([1, 2, 3])), MASK, SPECIAL, VOCAB)
    with pytest.raises(ValueError, match=r"must lie in \[0, vocab_size=50\), got \[0, 1, 2, "
                                         r"3\] and ids in \[0, 50\]"):
        nn.mask_tokens(dev(np.array([[0, 50]])), MASK, SPECIAL, VOCAB)


def tiny_bert(seed=0):
    mt.manual_seed(seed)
    return nn.EncoderClassifier(nn.EncoderClassifierConfig(
        vocab_size=13, max_len=8, d_model=8, num_heads=2, num_layers=1, d_ff=12,
        dropout=0.0, num_classes=None))


@settings(max_examples=4)
@given(seed=st.integers(0, 2**32 - 1), head=st.sampled_from(["mlm", "tokens"]))
def test_heads_gradients(seed, head):
    bert = tiny_bert(seed)
    model = nn.MaskedLanguageModel(bert) if head == "mlm" else nn.TokenClassifier(bert, 5,
                                                                                  0.0)
    model.to(dtype=np.float64)
    for p in model.parameters():  # move zero biases and unit norms off their start
        p.data += 0.1 * mt.tensor(np.random.default_rng(seed).standard_normal(p.shape)).data
    ids = dev([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    assert mt.gradcheck(lambda *_: model(ids), model.parameters(), directions=2)


def test_mlm_head_is_tied_and_shapes():
    bert = tiny_bert()
    model = nn.MaskedLanguageModel(bert)
    assert model.head.decoder_weight is bert.token_embedding.weight
    names = [name for name, _ in model.named_parameters()]
    assert "head.decoder_weight" not in names and "head.decoder_bias" in names
    logits = model(dev([[1, 5, 6, 2]]))
    assert logits.shape == (1, 4, 13)
    assert nn.TokenClassifier(bert, 7)(dev([[1, 5, 2, 0]])).shape == (1, 4, 7)
