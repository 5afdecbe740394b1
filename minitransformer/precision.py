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
   clean steps in a row S is doubled, to use the range again. A checkpoint can hold the
   scaler's state (``save_checkpoint(..., loss_scaler=)``), so a resumed run goes on
   with the scale it had reached.

NumPy has no float16 matrix product in BLAS, so on the CPU float16 is much slower than
float32: there the point is correctness. The speed is for CuPy on a GPU.
"""
import contextlib
import math
import reprlib

from . import arguments, backend
from .optim import grad_norm


class LossScaler:
    """Dynamic loss scaling: ``scale`` multiplies the loss; ``unscale_(params)`` divides
    the gradients by it and reports whether they are all finite, updating the scale:
    divided by ``factor`` on an overflow (the step must be skipped), multiplied by it
    after ``growth_interval`` clean steps in a row.

    float16 spans 2^-24 ... 2^16, so the scale grows no further than 2^24 (where even a
    gradient of 2^-24 is lifted to 1) and may fall no lower than 2^-24 (where the scaled
    loss itself rounds to 0): gradients still inf or nan there did not overflow, and
    ``update`` raises FloatingPointError rather than skip every step from then on."""

    MIN_SCALE, MAX_SCALE = 2.0 ** -24, 2.0 ** 24

    def __init__(self, scale=2.0 ** 15, growth_interval=2000, factor=2.0):
        self.scale = arguments.positive_number("LossScaler", "scale", scale)
        self.growth_interval = arguments.positive_integer("LossScaler", "growth_interval",
                                                          growth_interval)
        self.factor = arguments.positive_number("LossScaler", "factor", factor)
        if self.factor <= 1:
            raise ValueError(f"LossScaler: factor must be > 1 (the scale is divided by it "
                             f"on an overflow, multiplied by it to grow), got {factor!r}")
        self.clean_steps = 0   # finite steps since the last change of scale
        self.skipped_steps = 0

    def update(self, finite):
        """Advance the state machine after a step whose gradients were ``finite``."""
        if not finite:
            if self.scale / self.factor < self.MIN_SCALE:
                raise FloatingPointError(
                    f"LossScaler: the gradients are inf or nan even with the loss scaled "
                    f"by {self.scale:g}, so float16 overflow is not the cause; look for an "
                    "op whose gradient is inf or nan (e.g. sqrt or log at 0) in float32")
            self.scale /= self.factor
            self.clean_steps = 0
            self.skipped_steps += 1
            return
        self.clean_steps += 1
        if self.clean_steps >= self.growth_interval:
            if self.scale * self.factor <= self.MAX_SCALE:
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

    def state_dict(self):
        """What changes during training, for a checkpoint (``save_checkpoint``)."""
        return {"scale": self.scale, "clean_steps": self.clean_steps,
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state):
        """Restore a ``state_dict()``; every value is checked before any is set."""
        if not isinstance(state, dict) or set(state) != set(self.state_dict()):
            raise ValueError(f"LossScaler: a state must be a dict with the keys "
                             f"{sorted(self.state_dict())}, got {reprlib.repr(state)}")
        scale = arguments.positive_number("LossScaler", "scale", state["scale"])
        clean = arguments.integer("LossScaler", "clean_steps", state["clean_steps"], low=0)
        skipped = arguments.integer("LossScaler", "skipped_steps", state["skipped_steps"], low=0)
        self.scale, self.clean_steps, self.skipped_steps = scale, clean, skipped


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
