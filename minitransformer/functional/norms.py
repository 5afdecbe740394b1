"""RMSNorm (Zhang and Sennrich, 2019): LayerNorm without the mean, as LLaMA uses."""
from .. import arguments
from ..autograd import Function
from .common import floating, widened


class RMSNorm(Function):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis: x (..., D), weight (D,) or
    absent. With r = 1/rms, xhat = x r and gh = g * weight, differentiating r through
    mean(x^2) gives dx = r (gh - xhat mean(gh xhat)) (LayerNorm's formula, less mean(gh))."""
    def forward(self, x, weight=None, eps=1e-6):
        self.dtype = x.dtype  # half precision: statistics in float32, as in LayerNorm
        x = widened(x)
        mean_square = (x * x).mean(axis=-1, keepdims=True)
        mean_square += eps
        self.inv_rms = 1 / self.xp.sqrt(mean_square)
        self.xhat, self.weight = x * self.inv_rms, weight
        out = self.xhat if weight is None else self.xhat * weight
        return out.astype(self.dtype, copy=False)

    def backward(self, grad):
        needs = self.needs_input_grad + [False]  # the weight may be absent
        grad = grad.astype(self.xhat.dtype, copy=False)
        gh = grad if self.weight is None else grad * self.weight
        gx = gw = None
        if needs[0]:
            gx = gh - self.xhat * (gh * self.xhat).mean(axis=-1, keepdims=True)
            gx *= self.inv_rms
        if needs[1]:
            gw = (grad * self.xhat).reshape(-1, grad.shape[-1]).sum(axis=0)
        return gx, gw


def rms_norm(x, weight=None, eps=1e-6):
    """Divide the last axis of x (..., D) by its root mean square, then scale by
    ``weight`` (D,) or None; no centring and no bias. ``eps`` >= 0 is added to the
    mean square."""
    floating("rms_norm", x=x, **({} if weight is None else {"weight": weight}))
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"rms_norm: x has shape {x.shape}, expected (..., D) with D >= 1 "
                         "features to normalise")
    if weight is not None and weight.shape != (x.shape[-1],):
        raise ValueError(f"rms_norm: weight has shape {weight.shape}, expected "
                         f"({x.shape[-1]},) for x of shape {x.shape}")
    eps = arguments.non_negative_number("rms_norm", "eps", eps)
    return RMSNorm.apply(*(t for t in (x, weight) if t is not None), eps=eps)
