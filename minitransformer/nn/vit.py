"""The Vision Transformer (Dosovitskiy et al., 2020): an image as a sequence of patches.

Cut the image into p x p patches, flatten each into a vector of C p² pixels and project
it linearly to d_model: the patches are the tokens. Prepend a learned [CLS] vector, add
a learned position per token, run a pre-LN encoder, and classify from the [CLS]
position's output. Cutting into patches is only a reshape and a transpose, and the
projection is an ordinary ``Linear``, so nothing here needs a new gradient: a
convolution with stride p, as most code writes it, computes exactly this.
"""
from dataclasses import dataclass

from .. import backend
from ..autograd import Tensor
from ..ops import concatenate
from .checks import check_device
from .layers import Dropout, LearnedPositionalEmbedding, Linear, _constant
from .module import Module
from .transformer import Encoder


@dataclass
class ViTConfig:
    image_size: int = 224          # square images, image_size x image_size pixels
    patch_size: int = 16           # must divide image_size
    channels: int = 3
    num_classes: int = 1000
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    d_ff: int | None = None        # default 4 * d_model
    dropout: float = 0.0
    layer_norm_eps: float = 1e-6


class ViT(Module):
    """forward(images (B, C, H, W)) -> logits (B, num_classes); encode(images) -> the
    encoder's output (B, 1 + N, d_model), position 0 being [CLS], then the N patches in
    row-major order. Each layer's ``self_attn.attention_weights`` (B, H, 1 + N, 1 + N)
    holds its last attention, so row 0 shows where [CLS] looked.
    """

    def __init__(self, config):
        c = self.config = config
        if c.image_size % c.patch_size:
            raise ValueError(f"ViT: patch_size={c.patch_size} must divide "
                             f"image_size={c.image_size}")
        self.num_patches = (c.image_size // c.patch_size) ** 2
        self.patch_embedding = Linear(c.channels * c.patch_size ** 2, c.d_model)
        self.cls_token = _constant(0.0, (1, 1, c.d_model))  # zeros, as in the paper's code
        self.position_embedding = LearnedPositionalEmbedding(1 + self.num_patches, c.d_model)
        self.dropout = Dropout(c.dropout)
        self.encoder = Encoder(c.num_layers, c.d_model, c.num_heads,
                               c.d_ff or 4 * c.d_model, c.dropout, "gelu", norm_first=True,
                               layer_norm_eps=c.layer_norm_eps)  # ends with a LayerNorm
        self.head = Linear(c.d_model, c.num_classes)

    def patches(self, images):
        """(B, C, H, W) -> (B, N, C p²): patch (i, j) is token i * W/p + j, its pixels
        in (channel, row, column) order, as the flattened weight of a stride-p conv."""
        c = self.config
        images = self._check_images(images)
        batch, side, p = images.shape[0], c.image_size // c.patch_size, c.patch_size
        grid = images.reshape(batch, c.channels, side, p, side, p)  # (B, C, H/p, p, W/p, p)
        return grid.transpose(0, 2, 4, 1, 3, 5).reshape(batch, side * side, -1)  # (B, N, C p²)

    def encode(self, images):
        x = self.patch_embedding(self.patches(images))  # (B, N, D)
        cls = self.cls_token + x.xp.zeros((x.shape[0], 1, 1), dtype=x.dtype)  # one per row
        x = self.position_embedding(concatenate([cls, x], axis=1))  # (B, 1 + N, D)
        return self.encoder(self.dropout(x))

    def forward(self, images):
        return self.head(self.encode(images)[:, 0])  # [CLS]: (B, 1 + N, D) -> (B, D)

    def _check_images(self, images):
        c = self.config
        if not isinstance(images, Tensor):
            images = Tensor(images) if backend.is_array(images) else None
        expected = (c.channels, c.image_size, c.image_size)
        if images is None or images.ndim != 4 or images.shape[1:] != expected \
                or images.dtype.kind != "f":
            given = (f"shape {images.shape}, dtype {images.dtype}" if images is not None
                     else "no array")
            raise ValueError(f"ViT: images must be a float (B, C, H, W) = (B, "
                             f"{', '.join(map(str, expected))}) array or Tensor, got {given}")
        check_device("ViT", "images", images, self.device)
        return images
