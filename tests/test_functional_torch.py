"""PyTorch as an oracle: every function of minitransformer.functional against
torch.nn.functional, forward and backward, in float64 on hypothesis-drawn inputs.

Optional: skipped when torch is not installed. Conventions that differ are bridged here:
cross_entropy takes classes last (torch: (B, C, L)), and torch's boolean attn_mask means
True = may attend, as ours does. Dropout draws from a different generator, so it has no
oracle; its tests are in test_functional.py.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from minitransformer import functional as F
from strategies import arrays, host, leaf

torch = pytest.importorskip("torch")
TF = torch.nn.functional

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)


def matches_torch(ours, theirs, inputs):
    """``ours(*tensors)`` and ``theirs(*torch tensors)``, made from the float64 NumPy
    ``inputs``, agree in value and in every input's gradient under one random upstream
    gradient (measured differences are a few 1e-15)."""
    mine = [leaf(a) for a in inputs]
    reference = [torch.tensor(a, requires_grad=True) for a in inputs]
    out, expected = ours(*mine), theirs(*reference)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    upstream = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(mt.tensor(upstream))
    expected.backward(torch.tensor(upstream))
    for m, r in zip(mine, reference):
        np.testing.assert_allclose(host(m.grad), r.grad.numpy(), rtol=1e-12, atol=1e-12)


@given(data=st.data(), shape=shapes)
def test_softmax_and_log_softmax(data, shape):
    a = data.draw(arrays(shape, -20, 20))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    matches_torch(lambda x: F.softmax(x, axis), lambda x: TF.softmax(x, dim=axis), [a])
    matches_torch(lambda x: F.log_softmax(x, axis), lambda x: TF.log_softmax(x, dim=axis), [a])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@given(a=arrays(shapes, -8, 8))
def test_gelu(approximate, a):
    matches_torch(lambda x: F.gelu(x, approximate), lambda x: TF.gelu(x, approximate=approximate),
                  [a])


@given(a=arrays(shapes))
def test_relu(a):
    matches_torch(F.relu, TF.relu, [np.where(a == 0, 1.0, a)])


def test_erf_float64_and_float32():
    grid = np.linspace(-8, 8, 100001)
    ours = host(F.erf(mt.tensor(grid).data))
    np.testing.assert_allclose(ours, torch.erf(torch.tensor(grid)).numpy(), rtol=0, atol=5e-16)
    grid32 = grid.astype(np.float32)
    ours32 = host(F.erf(mt.tensor(grid32).data))
    np.testing.assert_allclose(ours32, torch.erf(torch.tensor(grid32)).numpy(), atol=5e-7)


@given(data=st.data(), lead=st.lists(st.integers(1, 3), max_size=2), n_in=st.integers(1, 5),
       n_out=st.integers(1, 5), bias=st.booleans())
def test_linear(data, lead, n_in, n_out, bias):
    inputs = [data.draw(arrays((*lead, n_in))), data.draw(arrays((n_out, n_in)))]
    inputs += [data.draw(arrays((n_out,)))] if bias else []
    matches_torch(F.linear, TF.linear, inputs)


@given(data=st.data(), vocab=st.integers(1, 8), dim=st.integers(1, 4),
       ids_shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=6))
def test_embedding(data, vocab, dim, ids_shape):
    ids = data.draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, vocab - 1)))
    matches_torch(lambda w: F.embedding(ids, w), lambda w: TF.embedding(torch.tensor(ids), w),
                  [data.draw(arrays((vocab, dim)))])


@given(data=st.data(), lead=st.lists(st.integers(1, 3), max_size=2), dim=st.integers(2, 6),
       eps=st.sampled_from([1e-5, 1e-12]))
def test_layer_norm(data, lead, dim, eps):
    x = data.draw(arrays((*lead, dim))) + np.arange(dim)  # a row of equal values has no
    w, b = data.draw(arrays((dim,))), data.draw(arrays((dim,)))  # meaningful gradient
    matches_torch(lambda x, w, b: F.layer_norm(x, w, b, eps),
                  lambda x, w, b: TF.layer_norm(x, (dim,), w, b, eps), [x, w, b])


@given(data=st.data(), with_bias=st.booleans())
def test_scaled_dot_product_attention(data, with_bias):
    """Masks, additive biases (torch: a float attn_mask) and grouped-query heads
    (torch: enable_gqa=True)."""
    b, h, lq, lk, dk, dv = (data.draw(st.integers(1, 4)) for _ in range(6))
    kv_heads = data.draw(st.sampled_from([n for n in range(1, h + 1) if h % n == 0]))
    q = data.draw(arrays((b, h, lq, dk)))
    k, v = data.draw(arrays((b, kv_heads, lk, dk))), data.draw(arrays((b, kv_heads, lk, dv)))
    mask_shape = tuple(data.draw(st.sampled_from([1, n])) for n in (b, h, lq, lk))
    mask = data.draw(st.none() | hnp.arrays(bool, mask_shape))
    bias_shape = tuple(data.draw(st.sampled_from([1, n])) for n in (b, h, lq, lk))
    inputs = [q, k, v] + ([data.draw(arrays(bias_shape))] if with_bias else [])

    def reference(q, k, v, bias=None):
        attn_mask = None if mask is None else torch.tensor(mask)
        if bias is not None and mask is not None:  # torch takes one attn_mask: fold the
            blocked = torch.tensor(-1e300, dtype=torch.float64)  # boolean one into the bias
            attn_mask = bias + torch.where(attn_mask, 0.0, blocked)
        elif bias is not None:
            attn_mask = bias
        out = TF.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=True)
        if mask is None:
            return out
        # A query with no key to attend to: ours gives zeros; make torch's row zeros too,
        # whatever its version returns there (NaN in some, zeros in others).
        has_key = torch.tensor(mask.any(axis=-1, keepdims=True))
        return torch.where(has_key, out, torch.zeros((), dtype=out.dtype))
    matches_torch(lambda q, k, v, bias=None: F.scaled_dot_product_attention(
        q, k, v, mask=mask, bias=bias)[0], reference, inputs)


@pytest.mark.parametrize("lq, lk, kv_heads, block", [(5, 5, 4, 1), (1, 9, 2, 4),
                                                     (3, 9, 1, 2), (4, 7, 4, 100)])
def test_blockwise_causal_attention_aligns_queries_to_the_end(lq, lk, kv_heads, block):
    """As when decoding with a KV cache, the Lq queries are the last Lq positions: query r
    sees keys up to r + Lk - Lq (torch's is_causal aligns them to the start, so an explicit
    mask here); with a bias, grouped heads, and blocks from 1 to longer than L."""
    rng = np.random.default_rng(10 * lq + lk)
    inputs = [rng.standard_normal(shape) for shape in (
        (2, 4, lq, 8), (2, kv_heads, lk, 8), (2, kv_heads, lk, 6), (4, lq, lk))]
    blocked = ~torch.tensor(np.tril(np.ones((lq, lk), bool), k=lk - lq))

    def reference(q, k, v, bias):
        return TF.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.masked_fill(blocked, float("-inf")), enable_gqa=True)
    matches_torch(lambda q, k, v, bias: F.blockwise_attention(
        q, k, v, bias=bias, causal=True, block_size=block), reference, inputs)


@given(data=st.data(), smoothing=st.sampled_from([0.0, 0.1, 0.7]),
       ignore=st.booleans(), sequence=st.booleans())
def test_cross_entropy(data, smoothing, ignore, sequence):
    lead = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))) if sequence else (
        data.draw(st.integers(1, 6)),)
    classes = data.draw(st.integers(1, 6))
    logits = data.draw(arrays((*lead, classes), -10, 10))
    targets = data.draw(hnp.arrays(np.int64, lead, elements=st.integers(0, classes - 1)))
    if ignore:
        targets[data.draw(hnp.arrays(bool, lead))] = -100
    ignore_index = -100 if ignore else None
    if ignore and (targets == -100).all():
        return  # torch gives NaN here, ours 0: tested in test_functional.py

    def reference(z):
        z = z.movedim(-1, 1) if sequence else z  # torch wants classes second
        return TF.cross_entropy(z, torch.tensor(targets), ignore_index=-100,
                                label_smoothing=smoothing)
    matches_torch(lambda z: F.cross_entropy(z, targets, ignore_index, smoothing), reference,
                  [logits])


def test_cross_entropy_all_ignored_torch_gives_nan_ours_zero():
    logits, targets = np.zeros((2, 3)), np.array([-100, -100])
    assert np.isnan(TF.cross_entropy(torch.tensor(logits), torch.tensor(targets)).item())
    assert F.cross_entropy(leaf(logits), targets, ignore_index=-100).item() == 0.0


@given(data=st.data(), lead=st.sampled_from([(3,), (2, 3)]), classes=st.integers(1, 5),
       smoothing=st.sampled_from([0.0, 0.2]))
def test_cross_entropy_with_probability_targets(data, lead, classes, smoothing):
    logits = data.draw(arrays((*lead, classes), -10, 10))
    weights = data.draw(arrays((*lead, classes), 0, 1)) + 1e-3
    targets = weights / weights.sum(axis=-1, keepdims=True)

    def reference(z):
        move = (lambda a: a.movedim(-1, 1)) if len(lead) == 2 else (lambda a: a)
        return TF.cross_entropy(move(z), move(torch.tensor(targets)),
                                label_smoothing=smoothing)
    matches_torch(lambda z: F.cross_entropy(z, targets, label_smoothing=smoothing),
                  reference, [logits])


@given(data=st.data(), shape=st.sampled_from([(4, 5), (2, 3, 4)]),
       temperature=st.sampled_from([0.5, 1.0, 3.0]))
def test_distillation_loss_is_scaled_kl_div(data, shape, temperature):
    student, teacher = (data.draw(arrays(shape, -10, 10)) for _ in range(2))

    def reference(s, t):  # batchmean divides by the first dimension: flatten the rows
        s, t = (a.reshape(-1, shape[-1]) / temperature for a in (s, t))
        return temperature ** 2 * TF.kl_div(TF.log_softmax(s, -1), TF.log_softmax(t, -1),
                                            reduction="batchmean", log_target=True)
    matches_torch(lambda s, t: F.distillation_loss(s, t, temperature), reference,
                  [student, teacher])


def test_float32_gelu_matches_torch():
    """The float32 erf path (no float64 detour) stays within float32 noise of torch."""
    a = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32) * 3
    ours = F.gelu(mt.tensor(a)).numpy()
    np.testing.assert_allclose(ours, TF.gelu(torch.tensor(a)).numpy(), rtol=2e-6, atol=2e-6)
