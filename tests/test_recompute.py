"""Activation recomputation: gradients bit-identical to the plain run on the CPU, dropout
included (the random draws are replayed), for a function, GPT and the BERT-style encoder
(the encoder-decoder: to rounding); the generator continues as without recomputation;
no graph inside."""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F


def gradients(model, loss_of, recompute, steps=2):
    """The losses and gradients of ``steps`` training steps (dropout on, same seed)."""
    mt.manual_seed(0)
    net = model()
    for module in net.modules():
        if hasattr(module, "recompute"):
            module.recompute = recompute
    net.config.recompute = recompute
    net.train()
    results = []
    for _ in range(steps):
        net.zero_grad()
        loss = loss_of(net)
        loss.backward()
        results.append((loss.numpy(), [mt.backend.to_numpy(p.grad) for p in net.parameters()]))
    return results


def assert_identical(a, b, exact):
    compare = np.testing.assert_array_equal if exact else (
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7))
    for (loss_a, grads_a), (loss_b, grads_b) in zip(a, b):
        compare(loss_a, loss_b)
        for x, y in zip(grads_a, grads_b):
            compare(x, y)


IDS = np.random.default_rng(1).integers(1, 13, (3, 9))
MODELS = {
    "gpt": (lambda: mt.nn.GPT(mt.nn.GPTConfig(13, max_len=9, d_model=16, num_heads=2,
                                              num_layers=3, dropout=0.2)),
            lambda net: F.cross_entropy(net(mt.tensor(IDS[:, :-1])), IDS[:, 1:])),
    "gpt-blockwise": (  # blockwise attention's own dropout replay, inside recompute's
        lambda: mt.nn.GPT(mt.nn.GPTConfig(13, max_len=9, d_model=16, num_heads=2,
                                          num_layers=2, dropout=0.2, attention="blockwise",
                                          attention_block_size=4)),
        lambda net: F.cross_entropy(net(mt.tensor(IDS[:, :-1])), IDS[:, 1:])),
    "transformer": (lambda: mt.nn.Transformer(mt.nn.TransformerConfig(
        13, 13, d_model=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
        d_ff=32, dropout=0.2)),
        lambda net: F.cross_entropy(net(mt.tensor(IDS), mt.tensor(IDS[:, :-1])), IDS[:, 1:])),
    "encoder": (lambda: mt.nn.EncoderClassifier(mt.nn.EncoderClassifierConfig(
        13, max_len=9, d_model=16, num_heads=2, num_layers=2, d_ff=32, dropout=0.2)),
        lambda net: F.cross_entropy(net(mt.tensor(IDS)), np.array([0, 1, 1]))),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recomputed_models_have_the_plain_gradients(backend, name):
    model, loss_of = MODELS[name]
    plain = gradients(model, loss_of, recompute=False)
    again = gradients(model, loss_of, recompute=True)
    # On the GPU the replayed dropout comes from a forked generator: other masks than
    # the plain run's, so only the CPU run can be compared with it.
    # In the encoder-decoder the memory's gradient is a sum over the decoder layers,
    # added up in another order (per layer first), so equal only to float32 rounding.
    if backend == "numpy":
        assert_identical(plain, again, exact=name != "transformer")
    assert_identical(again, gradients(model, loss_of, recompute=True), exact=True)


def test_recompute_of_a_function_with_dropout_and_parameters():
    """Inputs that need no gradient still let the parameters read inside fn get theirs."""
    rng = np.random.default_rng(0)
    w = mt.tensor(rng.standard_normal((4, 4)), requires_grad=True)
    x = mt.tensor(rng.standard_normal((3, 4)))

    def block(h):
        return F.dropout((h @ w).tanh(), 0.5, training=True) @ w

    def plain(f, h):  # forked too: on the GPU the fork starts a new generator
        mt.backend.rng_fork(h.device)
        return f(h)

    grads = []
    for wrap in (plain, mt.recompute):
        mt.manual_seed(3)
        w.grad = None
        out = wrap(block, x)
        assert out.requires_grad
        out.backward(mt.tensor(np.ones(out.shape)))
        grads.append((out.numpy(), mt.backend.to_numpy(w.grad), mt.backend.rng().random()))
    (out_a, grad_a, next_a), (out_b, grad_b, next_b) = grads
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_allclose(grad_a, grad_b, rtol=0, atol=0)
    assert next_a == next_b  # the generator goes on as if nothing were recomputed


def test_recompute_keeps_no_graph_inside_and_checks_its_arguments():
    x = mt.tensor(np.ones((2, 3)), requires_grad=True)
    out = mt.recompute(lambda h: (h * 2).exp().sum(axis=-1), x)
    assert type(out._ctx).__name__ == "Recompute" and out._ctx.inputs == [x]
    with mt.no_grad():
        assert mt.recompute(lambda h: h * 2, x)._ctx is None
    with pytest.raises(TypeError, match=r"at least one argument must be a Tensor .* got "
                                        r"\['ndarray'\]"):
        mt.recompute(lambda h: h, np.ones(3))
    with pytest.raises(TypeError, match="fn must be a function or module to call, got int"):
        mt.recompute(3, x)
    with pytest.raises(TypeError, match=r"pass Tensors positionally, .* got \['h'\]"):
        mt.recompute(lambda h: h, h=x)
    with pytest.raises(TypeError, match="fn must return one Tensor, got tuple"):
        mt.recompute(lambda h: (h, h), x)


def test_recompute_passes_other_arguments_on_unchanged():
    """Masks, numbers and None may sit among the tensors, as in a block's signature, and
    keyword arguments are passed on too."""
    rng = np.random.default_rng(0)
    w = mt.tensor(rng.standard_normal((4, 4)), requires_grad=True)
    x = mt.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    keep = mt.tensor(rng.random((3, 4)) < 0.5).data  # an array on the device, no Tensor

    def block(h, mask, scale, nothing, shift=0.0):
        assert nothing is None
        return ((h @ w) * mask * scale + shift).tanh()
    grads = []
    for wrap in (lambda f, *a, **k: f(*a, **k), mt.recompute):
        w.grad = x.grad = None
        wrap(block, x, keep, 3.0, None, shift=0.5).sum().backward()
        grads.append((mt.backend.to_numpy(w.grad), mt.backend.to_numpy(x.grad)))
    for plain, again in zip(*grads):
        np.testing.assert_array_equal(plain, again)
