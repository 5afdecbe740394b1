"""Mixed precision: float16 compute, float32 master weights, dynamic loss scaling.

float16 halves the memory of activations and, on GPUs, multiplies matmul speed; but it
keeps 11 significant bits and spans only about 6e-8 ... 65504. Three measures make
training in it track float32 (Micikevicius et al., 2018, "Mixed Precision Training"):

1. Master weights. The parameters stay float32; each forward and backward pass computes
   with float16 copies (``half_precision``). An update lr * g is often smaller than half
   a float16 step of the weight, and would be lost if the weights themselves were float16.
2. Float32 accumulation. Softmax, layer norm, attention's softmax and the loss add up
   many terms; they compute in float32 inside and return float16 (the loss float32).
3. Loss scaling. Small gradients underflow to 0 in float16. Multiplying the loss by S
   multiplies every gradient by S (the backward pass is linear in its seed), which lifts
   them into range; the float32 gradients are divided by S before the optimizer sees
   them. S is found on the fly (``LossScaler``): a gradient that overflowed (inf or NaN)
   means S is too large, so that step is skipped and S halved; after ``growth_interval``
   clean steps in a row S is doubled, to use the range again.

NumPy has no float16 matrix product in BLAS, so on the CPU float16 is much slower than
float32: there the point is correctness. The speed is for CuPy on a GPU.
"""
import contextlib
import math

from . import backend
from .optim import grad_norm


class LossScaler:
    """Dynamic loss scaling: ``scale`` multiplies the loss; ``unscale_(params)`` divides
    the gradients by it and reports whether they are all finite, updating the scale:
    halved on an overflow (the step must be skipped), doubled after ``growth_interval``
    clean steps in a row."""

    def __init__(self, scale=2.0 ** 15, growth_interval=2000, factor=2.0):
        if not (scale > 0 and math.isfinite(scale) and factor > 1):
            raise ValueError(f"LossScaler: scale must be finite and > 0 and factor > 1, got "
                             f"scale={scale}, factor={factor}")
        if not (isinstance(growth_interval, int) and growth_interval > 0):
            raise ValueError(f"LossScaler: growth_interval must be a positive integer, got "
                             f"{growth_interval!r}")
        self.scale, self.growth_interval, self.factor = float(scale), growth_interval, factor
        self.clean_steps = 0   # finite steps since the last change of scale
        self.skipped_steps = 0

    def update(self, finite):
        """Advance the state machine after a step whose gradients were ``finite``."""
        if not finite:
            self.scale /= self.factor
            self.clean_steps = 0
            self.skipped_steps += 1
            return
        self.clean_steps += 1
        if self.clean_steps == self.growth_interval:
            self.scale *= self.factor
            self.clean_steps = 0

    def unscale_(self, params):
        """Divide the gradients by the scale, in place; True if they are all finite (then
        the optimizer may step). Updates the scale either way."""
        for p in params:
            if p.grad is not None:
                p.grad /= p.grad.dtype.type(self.scale)
        finite = math.isfinite(grad_norm(params))
        self.update(finite)
        return finite


@contextlib.contextmanager
def half_precision(model, dtype="float16"):
    """Within this block the model's float32 parameters and buffers hold ``dtype``
    copies of themselves; on leaving, the float32 values are back and the gradients
    computed meanwhile are float32 too (added to any the parameters had). Overflow to
    inf is expected in float16 (the loss scaler looks for it), so NumPy does not warn."""
    tensors = [t for t in model._tensors() if t.dtype == backend.DEFAULT_DTYPE]
    masters = [(t.data, t.grad) for t in tensors]
    for t in tensors:
        t.data, t.grad = t.data.astype(dtype), None
    try:
        with backend.host.errstate(over="ignore", invalid="ignore"):
            yield
    finally:
        for t, (data, grad) in zip(tensors, masters):
            new = None if t.grad is None else t.grad.astype(data.dtype)
            t.data = data
            t.grad = grad if new is None else new if grad is None else grad + new
