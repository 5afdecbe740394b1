"""Matrix multiplication, batched and broadcast like ``numpy.matmul``."""
from ..autograd import Function
from .arithmetic import unbroadcast


class MatMul(Function):
    """a @ b with a: (..., n, k), b: (..., k, m) -> (..., n, m); 1-D operands are
    promoted as in NumPy. From d(a b) = da b + a db: dA = G bᵀ, dB = aᵀ G, summed over
    broadcast batch dims."""
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: operands must have at least 1 dimension")
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
