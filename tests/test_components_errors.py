"""Bad input to the newer components (issue 11): each is refused at the public entry
point with the argument's name, what was expected and what was given -- never a
NumPy traceback, a silent NaN or a wrong answer. NumPy integers count as integers."""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer import generate, masks, nn


def x():
    return mt.tensor(np.ones((2, 5, 8), np.float32))


def logits():
    return mt.tensor(np.zeros((1, 4))).data


BAD = [  # (call, exception, message pattern)
    # Grouped-query heads are axis -3 of 4-D inputs only: in (B, L, D) it is the batch.
    (lambda: F.scaled_dot_product_attention(mt.tensor(np.ones((4, 5, 8), np.float32)),
                                            x(), x()),
     ValueError, r"leading dims of q \(4, 5, 8\), k \(2, 5, 8\) .* do not broadcast"),
    (lambda: F.rotary_embedding(mt.tensor(np.ones((3, 4), np.int64)), np.arange(3)),
     TypeError, "rotary_embedding: x must be a floating tensor, got dtype int64"),
    (lambda: F.rotary_embedding(np.ones((3, 4)), np.arange(3)),
     TypeError, "rotary_embedding: x must be a Tensor, got ndarray"),
    (lambda: F.rotary_embedding(x()[..., :7], np.arange(5)),
     ValueError, r"x must be \(..., L, d\) with an even d, got shape \(2, 5, 7\)"),
    (lambda: F.rotary_embedding(x(), np.arange(-5, 0)),
     ValueError, "rotary_embedding: positions must be >= 0, got -5"),
    (lambda: F.rotary_embedding(x(), np.arange(5.0)),
     TypeError, "positions must be integers, got dtype float64"),
    (lambda: F.rotary_embedding(x(), np.arange(5), 0.0),
     ValueError, "rotary_embedding: base must be a finite number > 0, got 0.0"),
    (lambda: F.rotary_embedding(x(), np.arange(5), float("nan")),
     ValueError, "base must be a finite number > 0, got nan"),
    (lambda: F.rotary_embedding(x(), np.arange(5), "1e4"),
     TypeError, "base must be a number, got '1e4'"),
    (lambda: nn.MultiHeadAttention(6, 2, rotary_base=10000.0),
     ValueError, "MultiHeadAttention: RoPE .* head size d_model/num_heads = 3 is odd"),
    (lambda: nn.MultiHeadAttention(8, 2, rotary_base=-1.0),
     ValueError, "rotary_base must be a finite number > 0, got -1.0"),
    (lambda: nn.MultiHeadAttention(8, 2, dropout="0.1"),
     TypeError, "MultiHeadAttention: dropout must be a number, got '0.1'"),
    (lambda: nn.MultiHeadAttention(8, 4, num_kv_heads=True),
     TypeError, "num_kv_heads must be an integer, got True"),
    (lambda: nn.GPT(nn.GPTConfig(vocab_size=5, d_model=6, num_heads=2, positions="rope")),
     ValueError, "head size d_model/num_heads = 3 is odd"),
    (lambda: F.scaled_dot_product_attention(x(), x(), x(), dropout_p="0.1"),
     TypeError, "scaled_dot_product_attention: dropout_p must be a number"),
    (lambda: F.scaled_dot_product_attention(x(), x(), x(), dropout_p=float("nan")),
     ValueError, r"dropout_p must be in \[0, 1\), got nan"),
    (lambda: F.rms_norm(x(), None, -1.0),
     ValueError, "rms_norm: eps must be a finite number >= 0, got -1.0"),
    (lambda: F.rms_norm(x(), mt.tensor(np.ones(8, np.int64))),
     TypeError, "rms_norm: weight must be a floating tensor, got dtype int64"),
    (lambda: F.rms_norm(mt.tensor(np.float32(1))),
     ValueError, r"rms_norm: x has shape \(\), expected \(..., D\)"),
    (lambda: nn.RMSNorm(8, eps=float("nan")),
     ValueError, "RMSNorm: eps must be a finite number >= 0, got nan"),
    (lambda: nn.LayerNorm(8, eps=-1e-5),  # the older norm, by the same rule
     ValueError, "LayerNorm: eps must be a finite number >= 0, got -1e-05"),
    (lambda: F.layer_norm(x(), None, None, eps="1e-5"),
     TypeError, "layer_norm: eps must be a number, got '1e-5'"),
    (lambda: F.silu(mt.tensor(np.arange(4))),
     TypeError, "silu: x must be a floating tensor, got dtype int64"),
    (lambda: nn.FeedForward(8, 16, activation=["relu"]),
     ValueError, r"FeedForward: activation must be one of .* got \['relu'\]"),
    (lambda: masks.alibi_slopes(True),
     TypeError, "alibi_slopes: num_heads must be an integer, got True"),
    (lambda: masks.alibi_bias(2.0, 3),
     TypeError, "num_heads must be an integer, got 2.0"),
    (lambda: nn.relative_position_bucket(np.arange(-3, 3.0)),
     TypeError, "relative must be integer offsets, got dtype float64"),
    (lambda: nn.relative_position_bucket(np.arange(3), True, 2, 128),
     ValueError, r"num_buckets=2 leaves no exact bucket; expected num_buckets >= 4"),
    (lambda: nn.RelativePositionBias(2, num_buckets=32, max_distance=8),
     ValueError, "max_distance=8 must exceed the 8 offsets"),
    (lambda: nn.RelativePositionBias(2)(5, 3),
     ValueError, "RelativePositionBias: q_len=5 exceeds k_len=3"),
    (lambda: nn.RelativePositionBias(2)(0),
     ValueError, "RelativePositionBias: q_len must be a positive int, got 0"),
    (lambda: generate.sampling_distribution(logits(), top_p=float("nan")),
     ValueError, r"sampling_distribution: top_p must be in \(0, 1\], got nan"),
    (lambda: generate.sampling_distribution(logits(), top_p=True),
     TypeError, "top_p must be a number, got True"),
    (lambda: generate.sampling_distribution(logits(), top_k=0),
     ValueError, "top_k must be a positive integer, got 0"),
    (lambda: generate.sampling_distribution(logits()[0]),
     ValueError, r"logits must be a real \(B, V\) array, got shape \(4,\)"),
    (lambda: generate.sampling_distribution(logits() + np.nan),
     ValueError, "row 0 has nan; check the logits for NaN or inf"),
    (lambda: generate.sampling_distribution(logits() - np.inf),
     ValueError, "row 0 has -inf"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_input_is_refused_clearly(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_numpy_integers_and_floats_are_accepted():
    assert len(masks.alibi_slopes(np.int64(6))) == 6
    assert nn.RelativePositionBias(np.int64(2))(np.int64(3), np.int32(4)).shape == (1, 2, 3, 4)
    assert nn.MultiHeadAttention(8, np.int64(4), num_kv_heads=np.int32(2),
                                 rotary_base=np.float32(100)).num_kv_heads == 2
    assert F.rotary_embedding(x(), np.arange(5, dtype=np.uint8), np.float32(10)).shape == (2, 5, 8)
    probs = generate.sampling_distribution(logits(), np.float32(0.5), np.int64(2),
                                           np.float64(0.5))
    assert mt.backend.to_numpy(probs).sum() == pytest.approx(1)


def test_a_bias_tensor_on_another_device_is_refused():
    q = mt.tensor(np.ones((1, 3, 4), np.float32))
    if q.device == "cpu":
        pytest.skip("needs a GPU backend (or the CuPy stand-in) to have two devices")
    bias = mt.tensor(np.zeros((3, 3), np.float32), device="cpu")
    with pytest.raises(mt.backend.DeviceError, match="bias is on 'cpu' but q is on 'gpu'"):
        F.scaled_dot_product_attention(q, q, q, bias=bias)
