"""Neural-network functions, each one graph node with a hand-derived backward pass.

Composing softmax from ``exp``, ``sum`` and ``div`` would work (the tests do exactly
that, to prove these equal), but every primitive is a node that saves its inputs and
walks its own backward. Fusing a whole function into one ``Function`` saves memory and
Python overhead, and puts the derivation where a reader can check it in one screen.
Forward passes work in place on the fresh arrays they create, to keep temporaries few.

Shapes follow the house conventions: batch first, features last, attention scores
``(..., Lq, Lk)``; a boolean mask is True where a query may attend to a key.

Read the modules in this order: ``erf`` (the error function, which gelu needs),
``activations`` (softmax, log_softmax, relu, silu, gelu, dropout), ``layers`` (linear,
embedding, layer_norm), ``norms`` (rms_norm), ``positions`` (rotary_embedding),
``attention`` (scaled_dot_product_attention), ``blockwise_attention`` (the same in O(L)
memory), ``losses`` (cross_entropy, distillation_loss); ``common`` holds their small
shared helpers.
"""
from .activations import dropout, gelu, log_softmax, relu, silu, softmax
from .attention import scaled_dot_product_attention
from .blockwise_attention import blockwise_attention
from .erf import erf
from .layers import embedding, layer_norm, linear
from .losses import cross_entropy, distillation_loss
from .norms import rms_norm
from .positions import rotary_embedding

__all__ = ["softmax", "log_softmax", "relu", "silu", "gelu", "erf", "dropout", "linear",
           "embedding", "layer_norm", "rms_norm", "rotary_embedding",
           "scaled_dot_product_attention", "blockwise_attention", "cross_entropy",
           "distillation_loss"]
