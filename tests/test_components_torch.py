"""PyTorch as an oracle for the newer components, in float64: SiLU, RMSNorm
(torch.nn.functional.rms_norm) and the gated feed-forwards (the same formula composed
in torch). Attention with a bias and grouped-query heads is in test_functional_torch.py.
Optional: skipped when torch is not installed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import functional as F
from minitransformer import nn
from strategies import arrays, host, leaf
from test_functional_torch import matches_torch

torch = pytest.importorskip("torch")
TF = torch.nn.functional
lead_dims = st.lists(st.integers(1, 3), max_size=2)


@given(data=st.data(), lead=lead_dims, dim=st.integers(1, 5))
def test_silu(data, lead, dim):
    matches_torch(F.silu, TF.silu, [data.draw(arrays((*lead, dim), -10, 10))])


@given(data=st.data(), lead=lead_dims, dim=st.integers(1, 6), eps=st.sampled_from([1e-6, 0.1]))
def test_rms_norm(data, lead, dim, eps):
    x = data.draw(arrays((*lead, dim))) + 0.5
    w = data.draw(arrays((dim,)))
    matches_torch(lambda x, w: F.rms_norm(x, w, eps),
                  lambda x, w: TF.rms_norm(x, (dim,), w, eps), [x, w])


@pytest.mark.parametrize("activation, act", [("swiglu", TF.silu), ("geglu", TF.gelu)])
@given(data=st.data(), lead=lead_dims, d_ff=st.integers(1, 5), bias=st.booleans())
def test_gated_feed_forward(activation, act, data, lead, d_ff, bias):
    """linear2(act(gate(x)) * linear1(x)), composed in torch from the same weights;
    the gradients of x and of every parameter agree."""
    ff = nn.FeedForward(3, d_ff, 0.0, activation, bias).to(dtype=np.float64)
    names = [name for name, _ in ff.named_parameters()]
    x = leaf(data.draw(arrays((*lead, 3))))
    reference = [torch.tensor(host(t.data), requires_grad=True) for t in [x, *ff.parameters()]]
    p = dict(zip(names, reference[1:]))

    def linear(name, h):
        return TF.linear(h, p[f"{name}.weight"], p.get(f"{name}.bias"))
    out, expected = ff(x), linear("linear2", act(linear("gate", reference[0])) *
                                  linear("linear1", reference[0]))
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    upstream = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(mt.tensor(upstream))
    expected.backward(torch.tensor(upstream))
    for m, r in zip([x, *ff.parameters()], reference):
        np.testing.assert_allclose(host(m.grad), r.grad.numpy(), rtol=1e-12, atol=1e-12)
