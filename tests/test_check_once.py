"""Issue 14's readability pass, held in place: arguments checked once per call (token ids
are a GPU sync each on CuPy), one value-to-array helper, ``Module.device``, the block's
neutral name and MultiHeadAttention's float ``dropout_p``."""
import numpy as np

import minitransformer as mt
from minitransformer import nn
from minitransformer.autograd import as_array
from minitransformer.functional import common
from minitransformer.nn import models


def _count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_token_ids_are_range_checked_once_per_value(monkeypatch):
    model_checks = _count_calls(monkeypatch, models, "check_ids")
    embedding_checks = _count_calls(monkeypatch, common, "indices")
    gpt = nn.GPT(nn.GPTConfig(11, max_len=8, d_model=8, num_heads=2, num_layers=2,
                              positions="t5"))
    gpt(mt.tensor(np.ones((2, 5), np.int64)))
    assert (len(model_checks), len(embedding_checks)) == (1, 0)
    transformer = nn.Transformer(nn.TransformerConfig(9, 9, d_model=8, num_heads=2,
                                                      num_encoder_layers=1,
                                                      num_decoder_layers=1, d_ff=16))
    transformer(mt.tensor(np.ones((2, 4), np.int64)), mt.tensor(np.ones((2, 3), np.int64)))
    assert (len(model_checks), len(embedding_checks)) == (1 + 2, 0)  # src and tgt
    nn.Embedding(5, 3)(np.array([[1, 4]]))  # a module called directly still checks
    assert len(embedding_checks) == 1


def test_module_device_and_as_array():
    here = mt.tensor(0.0).device
    assert nn.Linear(2, 3).device == here
    assert nn.SinusoidalPositionalEncoding(4, 8).device == here  # a buffer only
    assert nn.Dropout(0.1).device is None  # nothing of its own: runs where its input is

    class Custom(nn.Module):
        def __init__(self):
            self.device = "somewhere"  # PyTorch code often keeps one; it stays its own
            self.linear = nn.Linear(2, 2)
    assert Custom().device == "somewhere" and len(Custom().parameters()) == 2
    x = mt.tensor([[1.0, 2.0]])
    assert as_array(x) is x.data
    assert mt.backend.device_of(as_array([[1, 2]])) == here
    assert mt.backend.device_of(as_array(np.ones(2), "cpu")) == "cpu"


def test_names():
    assert nn.EncoderLayer is nn.TransformerBlock
    gpt = nn.GPT(nn.GPTConfig(11, max_len=8, d_model=8, num_heads=2, num_layers=1))
    assert isinstance(gpt.blocks[0], nn.TransformerBlock)
    mha = nn.MultiHeadAttention(8, 2, dropout=0.25)
    assert mha.dropout_p == 0.25 and "dropout=0.25" in repr(mha)
