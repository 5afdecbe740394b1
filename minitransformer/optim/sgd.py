"""Stochastic gradient descent, with optional momentum and L2 weight decay."""
from .optimizer import Optimizer


class SGD(Optimizer):
    """``p -= lr * v`` with ``v = momentum * v + g`` (``v = g`` without momentum), where
    ``g = grad + weight_decay * p``: PyTorch's ``torch.optim.SGD`` without dampening.

    The first momentum step starts from ``v = g`` rather than from zero, as in PyTorch,
    so momentum does not damp the very first update.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def _update(self, param, state, group):
        grad = param.grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param.data
        if group["momentum"]:
            velocity = state.get("momentum_buffer")
            if velocity is None:
                # a copy, and an array even where NumPy gives a 0-d param a scalar grad
                velocity = state["momentum_buffer"] = param.xp.array(grad)
            else:
                velocity *= group["momentum"]
                velocity += grad
            grad = velocity
        param.data -= group["lr"] * grad
