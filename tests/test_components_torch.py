"""PyTorch as an oracle for the newer components, in float64: SiLU, RMSNorm
(torch.nn.functional.rms_norm, also its float16 statistics) and the gated feed-forwards
(the same formula composed in torch); attention biases of every rank with grouped-query
heads and fully masked rows, in float32 too; a LLaMA-style GPT against Hugging Face's
formulation composed in torch, with and without the KV cache. The hypothesis tests of
attention with a bias and grouped-query heads are in test_functional_torch.py.
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


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("bias_shape", [(3, 5), (5,), (4, 1, 5), (2, 1, 1, 5), (1, 4, 3, 5)])
def test_attention_bias_of_any_rank_with_gqa_and_dead_rows(dtype, tol, heads, kv_heads,
                                                           bias_shape):
    """Lower-rank biases broadcast like torch's float attn_mask, with grouped-query
    heads and a boolean mask whose row 0 blocks every key (ours: zeros; torch's NaN
    row is replaced by zeros), in float32 as well as float64."""
    rng = np.random.default_rng(sum(bias_shape) + heads + kv_heads)
    shapes = [(2, heads, 3, 4), (2, kv_heads, 5, 4), (2, kv_heads, 5, 4), bias_shape]
    inputs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    mask = rng.random((2, 1, 3, 5)) < 0.6
    mask[..., 1, 0] = mask[..., 2, 0] = True
    mask[..., 0, :] = False
    mine = [mt.tensor(a, requires_grad=True) for a in inputs]
    out = F.scaled_dot_product_attention(*mine[:3], mask=mt.tensor(mask).data,
                                         bias=mine[3])[0]
    theirs = [torch.tensor(a, requires_grad=True) for a in inputs]
    blocked = torch.where(torch.tensor(mask), 0.0, -torch.inf).to(theirs[0].dtype)
    expected = TF.scaled_dot_product_attention(*theirs[:3], attn_mask=theirs[3] + blocked,
                                               enable_gqa=True)
    expected = torch.where(torch.tensor(mask).any(-1, keepdim=True), expected, 0.0)
    upstream = rng.standard_normal(out.shape).astype(dtype)
    out.backward(mt.tensor(upstream))
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), atol=tol)
    for m, r in zip(mine, theirs):
        assert m.grad.dtype == dtype
        np.testing.assert_allclose(host(m.grad), r.grad.numpy(), atol=tol)


def test_rms_norm_half_precision_statistics_match_torch_in_float32():
    x = (np.random.default_rng(0).standard_normal((3, 16)) * 200).astype(np.float16)
    x[0] = 1e-3  # a constant row of tiny values: mean(x^2) underflows in float16
    ours = F.rms_norm(mt.tensor(x), None, 1e-12).numpy()
    expected = TF.rms_norm(torch.tensor(x).float(), (16,), None, 1e-12).half().numpy()
    assert ours.dtype == np.float16
    np.testing.assert_array_equal(ours, expected)


def llama_reference(p, ids, c):
    """A LLaMA decoder as Hugging Face writes it (rotate_half, repeat_interleave of the
    key/value heads, RMSNorm in front of each sub-layer, SwiGLU, tied embeddings)."""
    heads, kv_heads, width = c.num_heads, c.num_kv_heads, c.d_model
    size, (batch, length) = width // heads, ids.shape
    angles = torch.arange(length, dtype=torch.float64)[:, None] / c.rope_base ** (
        torch.arange(0, size, 2, dtype=torch.float64) / size)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rope(t):
        return t * cos + torch.cat([-t[..., size // 2:], t[..., :size // 2]], -1) * sin

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + c.layer_norm_eps) * w

    def split(t, n):
        return t.view(batch, length, n, size).transpose(1, 2)
    x = p["token_embedding.weight"][ids]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for i in range(c.num_layers):
        w = {k[len(f"blocks.{i}."):]: v for k, v in p.items() if k.startswith(f"blocks.{i}.")}
        h = rms(x, w["norm1.weight"])
        q = rope(split(h @ w["self_attn.w_q.weight"].T, heads))
        k = rope(split(h @ w["self_attn.w_k.weight"].T, kv_heads))
        v = split(h @ w["self_attn.w_v.weight"].T, kv_heads)
        k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
        scores = (q @ k.transpose(-1, -2) / size ** 0.5).masked_fill(~causal, -torch.inf)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
        x = x + attended @ w["self_attn.w_o.weight"].T
        h = rms(x, w["norm2.weight"])
        gated = TF.silu(h @ w["feed_forward.gate.weight"].T) * (h @ w["feed_forward.linear1.weight"].T)
        x = x + gated @ w["feed_forward.linear2.weight"].T
    return rms(x, p["final_norm.weight"]) @ p["token_embedding.weight"].T


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_llama_style_gpt_matches_an_independent_torch_composition(kv_heads):
    mt.manual_seed(kv_heads)
    c = nn.GPTConfig(vocab_size=13, max_len=16, d_model=16, num_heads=4, num_layers=2,
                     d_ff=24, dropout=0.0, norm="rms", positions="rope", activation="swiglu",
                     num_kv_heads=kv_heads, bias=False, rope_base=500.0)
    model = nn.GPT(c).to(dtype=np.float64).eval()
    rng = np.random.default_rng(kv_heads)
    for name, t in model.named_parameters():  # norms away from their initial ones
        if "norm" in name:
            t.data[...] = mt.tensor(rng.uniform(0.5, 1.5, t.shape)).data
    ids = rng.integers(0, 13, (2, 9))
    expected = llama_reference({n: torch.tensor(host(t.data)) for n, t in
                                model.named_parameters()}, torch.tensor(ids), c).numpy()
    np.testing.assert_allclose(model(mt.tensor(ids).data).numpy(), expected, atol=1e-12)
    cache = model.new_cache()
    steps = [model(mt.tensor(ids[:, a:b]).data, cache=cache).numpy()
             for a, b in ((0, 4), (4, 5), (5, 9))]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), expected, atol=1e-12)
