"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019).

For each parameter p with gradient g, at its step t = 1, 2, ...::

    m = beta1 * m + (1 - beta1) * g          # moving average of gradients ("exp_avg")
    v = beta2 * v + (1 - beta2) * g * g      # ... of squared gradients ("exp_avg_sq")
    p -= lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)

The two ``1 - beta^t`` factors undo the bias of m and v towards their zero start.
The optimizers differ only in weight decay: Adam adds ``weight_decay * p`` to g (L2
regularization, which Adam then rescales per coordinate), AdamW shrinks p directly,
``p *= 1 - lr * weight_decay``, before the step ("decoupled" decay, which behaves the
same for every coordinate). Both match ``torch.optim.Adam`` / ``AdamW`` exactly.
"""
import math

from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam; ``weight_decay`` is L2 regularization added to the gradient."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _checked_option(self, option, value):
        if option != "betas":
            return super()._checked_option(option, value)
        betas = tuple(float(b) for b in value)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{type(self).__name__}: betas must be two numbers in [0, 1), "
                             f"got {value!r}")
        return betas

    def _update(self, param, state, group):
        grad = param.grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param.data
        _adam_step(param, grad, state, group)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01): ``p *= 1 - lr * weight_decay``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _update(self, param, state, group):
        if group["weight_decay"]:
            param.data *= 1.0 - group["lr"] * group["weight_decay"]
        _adam_step(param, param.grad, state, group)


def _adam_step(param, grad, state, group):
    """The update in the module docstring, done in place with one scratch array: these
    element-wise passes are memory-bound, so every array not allocated is time saved."""
    xp = param.xp
    if not state:
        state.update(step=0, exp_avg=xp.zeros_like(param.data),
                     exp_avg_sq=xp.zeros_like(param.data))
    state["step"] += 1
    t, (beta1, beta2) = state["step"], group["betas"]
    m, v = state["exp_avg"], state["exp_avg_sq"]

    scratch = xp.multiply(grad, 1.0 - beta1, out=xp.empty_like(param.data))
    m *= beta1
    m += scratch
    xp.multiply(grad, grad, out=scratch)
    scratch *= 1.0 - beta2
    v *= beta2
    v += scratch

    xp.sqrt(v, out=scratch)                     # the denominator,
    scratch /= math.sqrt(1.0 - beta2 ** t)      # sqrt(v / (1 - beta2^t))
    scratch += group["eps"]                     #   + eps
    xp.divide(m, scratch, out=scratch)
    scratch *= group["lr"] / (1.0 - beta1 ** t)
    param.data -= scratch
