"""INT8 weights for inference: per-output-channel symmetric quantization of Linear layers.

Row i of a weight (one output channel) is stored as int8 codes q_i = round(w_i / s_i)
in [-127, 127] with one float scale s_i = max|w_i| / 127, so w_i ~ s_i q_i with an error
of at most s_i / 2 per weight. A scale per row, rather than one per matrix, keeps a row
of small weights from being rounded to zero by another row's large ones. The weights
take a quarter of the float32 memory (plus one scale per row); activations stay float.

The codes are fixed: gradients flow through a quantized layer to its input, but the
layer itself does not train (train the float model, then quantize it), and a model
holding one cannot be saved (save the float model; quantizing again is quick and gives
the same codes). An output layer tied to the token embedding (GPT's ``lm_head``) gets
its own int8 copy while the embedding stays float: the tie ends there.
"""
from ..autograd import Tensor
from .layers import Linear
from .module import Module, ModuleList


class QuantizedLinear(Module):
    """y = x (s q)ᵀ + b with int8 codes q (out_features, in_features) and float scales s
    (out_features,). x (..., in_features) -> (..., out_features). For inference: the
    codes and scales are buffers, not parameters, and are not trained."""

    unsaved_state = ("whose int8 codes are buffers, which are not saved; save the float "
                     "model and call quantize_int8 again after loading it")

    def __init__(self, linear):
        if not isinstance(linear, Linear):
            raise TypeError(f"QuantizedLinear: expected a Linear to quantize, got "
                            f"{type(linear).__name__}")
        weight = linear.weight.data
        xp = linear.weight.xp
        scale = xp.abs(weight).max(axis=1) / 127
        scale[scale == 0] = 1  # an all-zero row: any scale codes it as zeros
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.codes = Tensor(xp.rint(weight / scale[:, None]).astype(xp.int8))
        self.scale = Tensor(scale)
        self.bias = None if linear.bias is None else Tensor(linear.bias.data.copy())

    @property
    def weight(self):
        """The float weight s q that the codes stand for, made anew on each access (one
        layer's worth at a time), outside any graph."""
        weight = self.codes.data.astype(self.scale.dtype)
        weight *= self.scale.data[:, None]
        return Tensor(weight)

    forward = Linear.forward  # the same y = x Wᵀ + b, with W = s q made by ``weight``

    def extra_repr(self):
        return Linear.extra_repr(self) + ", int8"


def quantize_int8(model):
    """Replace every ``Linear`` in ``model`` by a ``QuantizedLinear``, in place; returns
    the model. Embeddings and norms stay float. For inference only."""
    if not isinstance(model, Module) or isinstance(model, Linear):
        raise TypeError(f"quantize_int8: model must be a Module holding Linear layers, got "
                        f"{type(model).__name__}; a lone Linear becomes QuantizedLinear(linear)")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Linear):
                if isinstance(module, ModuleList):
                    module[int(name)] = QuantizedLinear(child)
                else:
                    setattr(module, name, QuantizedLinear(child))
    return model


def weight_bytes(model):
    """Bytes held by the weights of the model's (possibly quantized) linear layers:
    float weights, or int8 codes plus their scales."""
    total = 0
    for module in model.modules():
        if isinstance(module, Linear):
            total += module.weight.data.nbytes
        elif isinstance(module, QuantizedLinear):
            total += module.codes.data.nbytes + module.scale.data.nbytes
    return total
