"""The Vision Transformer: patches are the image's p x p blocks in row-major order (and
the patch embedding equals a stride-p convolution, checked against PyTorch), float64
gradient checks of every parameter and of the pixels, [CLS] attention shapes, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import nn
from strategies import host, leaf


def tiny_vit(seed=0, **overrides):
    mt.manual_seed(seed)
    config = dict(image_size=4, patch_size=2, channels=2, num_classes=3, d_model=8,
                  num_heads=2, num_layers=1, d_ff=12)
    return nn.ViT(nn.ViTConfig(**{**config, **overrides}))


def test_patches_are_blocks_in_row_major_order():
    model = tiny_vit(image_size=6, patch_size=3)
    images = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    patches = host(model.patches(leaf(images)).data)
    assert patches.shape == (2, 4, 2 * 9)
    for i in range(2):
        for j in range(2):
            block = images[:, :, 3 * i:3 * i + 3, 3 * j:3 * j + 3]  # (B, C, p, p)
            np.testing.assert_array_equal(patches[:, 2 * i + j], block.reshape(2, -1))


def test_patch_embedding_is_a_strided_convolution():
    torch = pytest.importorskip("torch")
    model = tiny_vit().to(dtype=np.float64)
    images = np.random.default_rng(1).standard_normal((3, 2, 4, 4))
    ours = model.patch_embedding(model.patches(leaf(images))).numpy()
    weight = model.patch_embedding.weight.numpy().reshape(8, 2, 2, 2)
    conv = torch.nn.functional.conv2d(torch.tensor(images), torch.tensor(weight),
                                      torch.tensor(model.patch_embedding.bias.numpy()),
                                      stride=2)  # (B, D, 2, 2)
    np.testing.assert_allclose(ours, conv.flatten(2).transpose(1, 2).numpy(), rtol=1e-12,
                               atol=1e-12)


@settings(max_examples=4)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 2), layers=st.integers(1, 2))
def test_vit_gradients(seed, batch, layers):
    model = tiny_vit(seed, num_layers=layers).to(dtype=np.float64)
    for p in model.parameters():  # the zero [CLS] start would hide its role in attention
        p.data += 0.1 * mt.tensor(np.random.default_rng(seed).standard_normal(p.shape)).data
    images = leaf(np.random.default_rng(seed).standard_normal((batch, 2, 4, 4)))
    assert mt.gradcheck(lambda *_: model(images), [images, *model.parameters()],
                        directions=2)


def test_vit_shapes_and_cls_attention():
    model = tiny_vit(image_size=8, patch_size=2, num_layers=2)
    images = mt.tensor(np.zeros((5, 2, 8, 8), np.float32))
    logits = model(images)
    assert logits.shape == (5, 3) and logits.dtype == np.float32
    assert model.encode(images).shape == (5, 1 + 16, 8)
    weights = model.encoder.layers[-1].self_attn.attention_weights.numpy()
    assert weights.shape == (5, 2, 17, 17)
    np.testing.assert_allclose(weights[:, :, 0].sum(axis=-1), 1, rtol=1e-6)


def test_vit_errors():
    with pytest.raises(ValueError, match="patch_size=3 must divide image_size=4"):
        tiny_vit(patch_size=3)
    model = tiny_vit()
    with pytest.raises(ValueError, match=r"images must be a float \(B, C, H, W\) = "
                                         r"\(B, 2, 4, 4\) array or Tensor, got shape "
                                         r"\(1, 4, 4\), dtype float32"):
        model(mt.tensor(np.zeros((1, 4, 4), np.float32)))
    with pytest.raises(ValueError, match="got shape .* dtype int64"):
        model(mt.tensor(np.zeros((1, 2, 4, 4), np.int64)))
    with pytest.raises(ValueError, match="got no array"):
        model([[1.0]])
