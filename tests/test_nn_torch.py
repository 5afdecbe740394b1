"""PyTorch as an oracle (optional: skipped without torch). Weights are copied across and
forward values, input gradients and every parameter gradient are compared in float64:
MultiHeadAttention against torch.nn.MultiheadAttention, the layers and stacks against
torch.nn.TransformerEncoderLayer / TransformerDecoderLayer / TransformerEncoder /
TransformerDecoder (batch_first=True), and the whole encoder-decoder against a model
built around torch.nn.Transformer.

Mind the masks: ours are True = may attend; torch.nn.MultiheadAttention's and
torch.nn.Transformer's boolean masks are True = blocked, so each is inverted on the way.
Run with ``pytest -s`` to see the largest differences.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn
from minitransformer.masks import causal_mask
from strategies import host

torch = pytest.importorskip("torch")

LARGEST = {}  # what -> the largest absolute difference seen


@pytest.fixture(scope="module", autouse=True)
def report_largest_differences():
    yield
    for what, diff in sorted(LARGEST.items()):
        print(f"\n  largest |ours - torch| for {what}: {diff:.2e}", end="")


def assert_close(ours, theirs, what, rtol=1e-9, atol=1e-11):
    ours, theirs = np.asarray(ours), theirs.detach().numpy()
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    LARGEST[what] = max(LARGEST.get(what, 0.0), float(np.abs(ours - theirs).max(initial=0)))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=what)


def torch_layout(arrays):
    """Our ``{name: array}`` (parameters or gradients) under torch's names: the
    attention projections w_q, w_k, w_v packed into one in_proj, as torch stores them."""
    renames = [("feed_forward.", ""), ("cross_attn.", "multihead_attn."),
               ("w_o.", "out_proj.")]
    out = {}
    for name, value in arrays.items():
        for ours, theirs in renames:
            name = name.replace(ours, theirs)
        for i, part in enumerate(("w_q.", "w_k.", "w_v.")):
            if part in name:
                out.setdefault(name.replace(part, "in_proj_"), [None] * 3)[i] = value
                break
        else:
            out[name] = value
    return {n: np.concatenate(v) if isinstance(v, list) else v for n, v in out.items()}


def copy_into_torch(ours, theirs, strip=""):
    """Our parameters into ``theirs``, whose names are ours behind the prefix ``strip``."""
    arrays = torch_layout(ours.state_dict())
    names = [n for n in theirs.state_dict()]
    assert sorted(n.removeprefix(strip) for n in names) == sorted(arrays)
    theirs.load_state_dict({n: torch.from_numpy(arrays[n.removeprefix(strip)]) for n in names})


def compare_parameter_grads(ours, theirs, what, strip=""):
    grads = torch_layout({n: host(p.grad) for n, p in ours.named_parameters()})
    for name, p in theirs.named_parameters():
        assert_close(grads[name.removeprefix(strip)], p.grad, f"{what} grad")


def leaf_pair(rng, *shape):
    """The same random float64 data as our leaf and as a torch leaf."""
    data = rng.standard_normal(shape)
    return (mt.tensor(data, requires_grad=True),
            torch.tensor(data, dtype=torch.float64, requires_grad=True))


def backward_both(ours_out, theirs_out, rng):
    upstream = rng.standard_normal(ours_out.shape)
    ours_out.backward(upstream)
    theirs_out.backward(torch.from_numpy(upstream))


def key_lengths(draw, batch, length):
    """Padding lengths >= 1: torch gives NaN for a query with nothing to attend to."""
    return np.array(draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch)))


def padding(lengths, length):
    """True at padded keys, (B, L): torch's key_padding_mask."""
    return np.arange(length)[None, :] >= lengths[:, None]


def our_key_mask(pad):
    return mt.tensor(~pad[:, None, None, :])


@settings(max_examples=10)
@given(data=st.data(), batch=st.integers(1, 3), heads=st.integers(1, 3),
       head_dim=st.integers(1, 4), lq=st.integers(1, 5), lk=st.integers(1, 5),
       cross=st.booleans(), seed=st.integers(0, 2**16))
def test_multi_head_attention_matches_torch(data, batch, heads, head_dim, lq, lk, cross, seed):
    d, rng = heads * head_dim, np.random.default_rng(seed)
    lk = lk if cross else lq
    mt.manual_seed(seed)
    ours = nn.MultiHeadAttention(d, heads).to(dtype=np.float64)
    theirs = torch.nn.MultiheadAttention(d, heads, batch_first=True, dtype=torch.float64)
    copy_into_torch(ours, theirs)
    pad = padding(key_lengths(data.draw, batch, lk), lk)
    q, tq = leaf_pair(rng, batch, lq, d)
    kv, tkv = leaf_pair(rng, batch, lk, d) if cross else (q, tq)
    mask, attn_mask = our_key_mask(pad), None
    if not cross and data.draw(st.booleans()):
        causal = host(causal_mask(lq))
        mask = mt.tensor(host(mask.data) & causal)
        attn_mask = torch.from_numpy(~causal[0, 0])
    out = ours(q, kv, kv, mask)
    t_out, t_weights = theirs(tq, tkv, tkv, key_padding_mask=torch.from_numpy(pad),
                              attn_mask=attn_mask, average_attn_weights=False)
    assert_close(out.numpy(), t_out, "MultiHeadAttention output")
    assert_close(ours.attention_weights.numpy(), t_weights, "MultiHeadAttention weights")
    backward_both(out, t_out, rng)
    assert_close(host(q.grad), tq.grad, "MultiHeadAttention input grad")
    if cross:
        assert_close(host(kv.grad), tkv.grad, "MultiHeadAttention input grad")
    compare_parameter_grads(ours, theirs, "MultiHeadAttention")


LAYER_VARIANTS = [(norm_first, activation) for norm_first in (False, True)
                  for activation in ("relu", "gelu")]


def torch_layer(cls, d, heads, d_ff, norm_first, activation, eps=1e-5):
    return cls(d, heads, d_ff, dropout=0.0, activation=activation, layer_norm_eps=eps,
               batch_first=True, norm_first=norm_first, dtype=torch.float64)


@pytest.mark.parametrize("norm_first,activation", LAYER_VARIANTS)
@settings(max_examples=4)
@given(data=st.data(), batch=st.integers(1, 3), length=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_encoder_layer_matches_torch(norm_first, activation, data, batch, length, seed):
    rng, d, heads, d_ff = np.random.default_rng(seed), 6, 2, 10
    mt.manual_seed(seed)
    ours = nn.EncoderLayer(d, heads, d_ff, 0.0, activation, norm_first, 1e-6)
    ours.to(dtype=np.float64)
    theirs = torch_layer(torch.nn.TransformerEncoderLayer, d, heads, d_ff, norm_first,
                         activation, 1e-6)
    copy_into_torch(ours, theirs)
    pad = padding(key_lengths(data.draw, batch, length), length)
    x, tx = leaf_pair(rng, batch, length, d)
    out = ours(x, our_key_mask(pad))
    t_out = theirs(tx, src_key_padding_mask=torch.from_numpy(pad))
    assert_close(out.numpy(), t_out, "EncoderLayer output")
    backward_both(out, t_out, rng)
    assert_close(host(x.grad), tx.grad, "EncoderLayer input grad")
    compare_parameter_grads(ours, theirs, "EncoderLayer")


@pytest.mark.parametrize("norm_first,activation", LAYER_VARIANTS)
@settings(max_examples=4)
@given(data=st.data(), batch=st.integers(1, 3), lt=st.integers(1, 5), ls=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_decoder_layer_matches_torch(norm_first, activation, data, batch, lt, ls, seed):
    rng, d, heads, d_ff = np.random.default_rng(seed), 6, 3, 8
    mt.manual_seed(seed)
    ours = nn.DecoderLayer(d, heads, d_ff, 0.0, activation, norm_first).to(dtype=np.float64)
    theirs = torch_layer(torch.nn.TransformerDecoderLayer, d, heads, d_ff, norm_first,
                         activation)
    copy_into_torch(ours, theirs)
    src_pad = padding(key_lengths(data.draw, batch, ls), ls)
    tgt_pad = padding(key_lengths(data.draw, batch, lt), lt)
    causal = host(causal_mask(lt))
    x, tx = leaf_pair(rng, batch, lt, d)
    memory, t_memory = leaf_pair(rng, batch, ls, d)
    out = ours(x, memory, mt.tensor(host(our_key_mask(tgt_pad).data) & causal),
               our_key_mask(src_pad))
    t_out = theirs(tx, t_memory, tgt_mask=torch.from_numpy(~causal[0, 0]),
                   tgt_key_padding_mask=torch.from_numpy(tgt_pad),
                   memory_key_padding_mask=torch.from_numpy(src_pad))
    assert_close(out.numpy(), t_out, "DecoderLayer output")
    backward_both(out, t_out, rng)
    assert_close(host(x.grad), tx.grad, "DecoderLayer input grad")
    assert_close(host(memory.grad), t_memory.grad, "DecoderLayer memory grad")
    compare_parameter_grads(ours, theirs, "DecoderLayer")


class TorchSeq2Seq(torch.nn.Module):
    """Our Transformer's architecture around torch.nn.Transformer: scaled embeddings plus
    our sinusoid table, then the torch encoder-decoder, then the output layer."""

    def __init__(self, c, table):
        super().__init__()
        kw = dict(dtype=torch.float64)
        self.src_embedding = torch.nn.Embedding(c.src_vocab_size, c.d_model, **kw)
        self.tgt_embedding = torch.nn.Embedding(c.tgt_vocab_size, c.d_model, **kw)
        self.table, self.scale = torch.from_numpy(table), math.sqrt(c.d_model)
        # torch.nn.Transformer always ends its stacks with a LayerNorm; the paper's post-LN
        # model has none, so build the stacks to match ours.
        layer_args = (c.d_model, c.num_heads, c.d_ff, c.norm_first, c.activation)
        final_norm = (lambda: torch.nn.LayerNorm(c.d_model, **kw)) if c.norm_first else (
            lambda: None)
        encoder = torch.nn.TransformerEncoder(
            torch_layer(torch.nn.TransformerEncoderLayer, *layer_args), c.num_encoder_layers,
            final_norm(), enable_nested_tensor=False)
        decoder = torch.nn.TransformerDecoder(
            torch_layer(torch.nn.TransformerDecoderLayer, *layer_args), c.num_decoder_layers,
            final_norm())
        self.transformer = torch.nn.Transformer(c.d_model, c.num_heads, batch_first=True,
                                                custom_encoder=encoder,
                                                custom_decoder=decoder)
        self.generator = torch.nn.Linear(c.d_model, c.tgt_vocab_size, **kw)

    def forward(self, src, tgt, pad_id):
        embed = lambda table, ids: table(ids) * self.scale + self.table[:ids.shape[1]]
        causal = torch.nn.Transformer.generate_square_subsequent_mask(tgt.shape[1],
                                                                      dtype=torch.bool)
        h = self.transformer(embed(self.src_embedding, src), embed(self.tgt_embedding, tgt),
                             tgt_mask=causal, src_key_padding_mask=src == pad_id,
                             tgt_key_padding_mask=tgt == pad_id,
                             memory_key_padding_mask=src == pad_id)
        return self.generator(h)


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_whole_transformer_matches_torch(norm_first, activation):
    config = nn.TransformerConfig(src_vocab_size=11, tgt_vocab_size=13, d_model=8,
                                  num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                                  d_ff=16, dropout=0.0, activation=activation,
                                  norm_first=norm_first, max_len=32,
                                  tie_output_embedding=False)
    mt.manual_seed(0)
    ours = nn.Transformer(config).to(dtype=np.float64)
    theirs = TorchSeq2Seq(config, host(ours.positions.table.data))
    copy_into_torch(ours, theirs, strip="transformer.")
    src = np.array([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 2, 1]])
    tgt = np.array([[1, 5, 6, 0], [1, 2, 3, 4]])
    logits = ours(mt.tensor(src), mt.tensor(tgt))
    t_logits = theirs(torch.from_numpy(src), torch.from_numpy(tgt), config.pad_id)
    assert_close(logits.numpy(), t_logits, "Transformer logits")
    backward_both(logits, t_logits, np.random.default_rng(0))
    compare_parameter_grads(ours, theirs, "Transformer", strip="transformer.")
