"""Matrix multiplication, batched and broadcast like ``numpy.matmul``."""
from .. import backend
from ..autograd import Function
from .arithmetic import unbroadcast


class MatMul(Function):
    """a @ b with a: (..., n, k), b: (..., k, m) -> (..., n, m); 1-D operands are
    promoted as in NumPy. From d(a b) = da b + a db: dA = G bᵀ, dB = aᵀ G, summed over
    broadcast batch dims."""
    def forward(self, a, b):
        _check_shapes(a.shape, b.shape)
        self.a, self.b = a, b
        return a @ b

    def backward(self, grad):
        # Treat a 1-D operand as a one-row (a) or one-column (b) matrix, as forward did.
        a, b, g = self.a, self.b, grad
        if b.ndim == 1:
            b, g = b[:, None], g[..., None]
        if a.ndim == 1:
            a, g = a[None, :], self.xp.expand_dims(g, -2)
        ga = unbroadcast(g @ b.swapaxes(-1, -2), a.shape).reshape(self.a.shape)
        gb = unbroadcast(a.swapaxes(-1, -2) @ g, b.shape).reshape(self.b.shape)
        return ga, gb


def matmul(a, b):
    """a @ b, batched and broadcast like ``numpy.matmul``."""
    return MatMul.apply(a, b)


def _check_shapes(a, b):
    """NumPy's matmul rules, with both operand shapes in the message."""
    if not a or not b:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got shapes {a} @ {b}")
    inner_b = b[-2] if len(b) > 1 else b[0]
    if a[-1] != inner_b:
        raise ValueError(f"matmul: shapes {a} @ {b} do not match: a's last dim {a[-1]} must "
                         f"equal b's {'second-to-last' if len(b) > 1 else 'only'} dim {inner_b}")
    try:
        backend.host.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        raise ValueError(f"matmul: shapes {a} @ {b}: the batch dims {a[:-2]} and {b[:-2]} "
                         "do not broadcast") from None
