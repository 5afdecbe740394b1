"""Hardening of the public API (issue 10): sizes, devices, decoding and training
arguments. Each test failed on the code before the fix; the classes are guarded once,
in ``arguments.py`` (sizes, axes, numbers) and ``backend.check_device`` (devices)."""
import itertools

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import generate, nn
from minitransformer.masks import causal_mask
from minitransformer.nn.models import GPT, GPTConfig
from minitransformer.optim import SGD
from minitransformer.train import fit
from strategies import host


def tiny_gpt(vocab=7):
    mt.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, max_len=8, d_model=8, num_heads=2, num_layers=1))


PROMPT = np.zeros((1, 2), np.int64)


# ---- sizes: every integer type, nothing else ----------------------------------------

def test_sizes_accept_numpy_integers():
    attention = nn.MultiHeadAttention(np.int64(8), np.int64(2))
    assert attention.num_heads == 2 and type(attention.num_heads) is int
    layer = nn.Linear(np.int32(3), np.uint8(2))
    assert layer.weight.shape == (2, 3) and type(layer.in_features) is int
    assert nn.Encoder(np.int64(1), 4, 2, 8).layers is not None


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(3.0, 2), "Linear: in_features must be an integer, got 3.0"),
    (lambda: nn.Embedding(True, 2), "Embedding: num_embeddings must be an integer, got True"),
    (lambda: nn.MultiHeadAttention(8, 2.0), "MultiHeadAttention: num_heads must be an integer"),
])
def test_sizes_refuse_what_is_not_an_integer(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_embedding_accepts_a_negative_padding_idx_like_pytorch():
    embedding = nn.Embedding(5, 3, padding_idx=-1)
    assert embedding.padding_idx == 4
    np.testing.assert_array_equal(host(embedding.weight.data)[4], 0.0)
    embedding(mt.tensor([[4, 1]])).sum().backward()
    np.testing.assert_array_equal(host(embedding.weight.grad)[4], 0.0)
    with pytest.raises(ValueError, match=r"padding_idx must be an integer in \[-5, 4\], got 5"):
        nn.Embedding(5, 3, padding_idx=5)


# ---- devices: one validator for every device argument ---------------------------------

@pytest.mark.parametrize("call", [lambda d: mt.tensor(1.0, device=d),
                                  lambda d: causal_mask(2, device=d),
                                  lambda d: mt.tensor([1.0]).to(d),
                                  lambda d: nn.Linear(2, 2).to(d)])
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "tpu", 0])
def test_unknown_device_names_are_refused_everywhere(call, device):
    with pytest.raises(ValueError, match=r"device must be 'cpu' or 'gpu'.*got"):
        call(device)


def test_cuda_points_to_gpu():
    with pytest.raises(ValueError, match="a CUDA GPU is 'gpu'"):
        mt.tensor(1.0, device="cuda")


# ---- decoding arguments and NaN logits ------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda m: generate.greedy(m, PROMPT, -3), ValueError, "greedy: max_new_tokens must be an integer >= 0, got -3"),
    (lambda m: generate.greedy(m, PROMPT, 2, eos_id=7), ValueError, r"eos_id=7 is outside the model's vocabulary \[0, 7\)"),
    (lambda m: generate.sample(m, PROMPT, 2, temperature=float("nan")), ValueError, "temperature must be a finite number > 0, got nan"),
    (lambda m: generate.sample(m, PROMPT, 2, temperature=float("inf")), ValueError, "temperature"),
    (lambda m: generate.sample(m, PROMPT, 2, top_k=2.5), TypeError, "sample: top_k must be an integer, got 2.5"),
    (lambda m: generate.beam_search(m, PROMPT, 2, beam_size=2.5), TypeError, "beam_search: beam_size must be an integer"),
    (lambda m: generate.beam_search(m, PROMPT, 2, eos_id=9), ValueError, "beam_search: eos_id=9 is outside"),
    (lambda m: generate.beam_search(m, PROMPT, 2.0), TypeError, "max_new_tokens must be an integer"),
])
def test_decoding_arguments_are_checked(call, error, message):
    with pytest.raises(error, match=message):
        call(tiny_gpt())


def test_sampling_distribution_checks_its_arguments():
    logits = mt.tensor(np.zeros((1, 4))).data
    with pytest.raises(ValueError, match="sampling_distribution: temperature must be a finite"):
        generate.sampling_distribution(logits, temperature=float("nan"))
    with pytest.raises(TypeError, match="sampling_distribution: top_k must be an integer"):
        generate.sampling_distribution(logits, top_k=1.5)


def test_random_generators_refuse_unknown_devices():
    for call in (lambda: mt.backend.rng("cuda"), lambda: mt.backend.rng_fork("cuda")):
        with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu'"):
            call()


def test_decoding_accepts_numpy_integers():
    tokens = generate.sample(tiny_gpt(), PROMPT, np.int64(2), top_k=np.int64(3),
                             eos_id=np.int64(6))
    assert tokens.shape == (1, 4)
    best, _ = generate.beam_search(tiny_gpt(), PROMPT, np.int32(2), beam_size=np.int64(2))
    assert best.shape == (1, 4)


@pytest.mark.parametrize("decode", [lambda m: generate.greedy(m, PROMPT, 3),
                                    lambda m: generate.sample(m, PROMPT, 3),
                                    lambda m: generate.beam_search(m, PROMPT, 3)])
def test_nan_logits_stop_decoding(decode):
    model = tiny_gpt()
    model.lm_head.weight.data[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="logits contain NaN"):
        decode(model)


# ---- fit stops before a non-finite gradient reaches the parameters --------------------

class Root(nn.Module):
    def __init__(self):
        self.weight = nn.Parameter(mt.tensor([1.0, 2.0]).data)


def nan_gradient_loss(model, batch):
    """sqrt(0 * w) is 0, but its gradient is 0 * 1/(2 sqrt(0)) = NaN."""
    return (model.weight * 0.0).sqrt().sum() + (model.weight * model.weight).sum()


@pytest.mark.filterwarnings("ignore:.*(divide by zero|invalid value):RuntimeWarning")
@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_fit_refuses_a_non_finite_gradient_before_the_step(clip_norm):
    model = Root()
    saved = []
    with pytest.raises(FloatingPointError, match="gradient norm is nan at step 1 .*no "
                                                 "parameter was changed"):
        fit(model, SGD(model.parameters(), lr=0.1), itertools.repeat(None),
            nan_gradient_loss, steps=3, clip_norm=clip_norm, log_every=0,
            callback=lambda step, history: saved.append(step))
    np.testing.assert_array_equal(host(model.weight.data), [1.0, 2.0])
    assert saved == []
