"""Elementwise arithmetic with broadcasting.

When NumPy broadcasts an input of shape (3, 1) against (3, 4), each input element is
used 4 times, so its gradient is the sum of the 4 output gradients: ``unbroadcast``
sums the upstream gradient back down to the input's shape.
"""
from ..autograd import Function


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes along which an array of ``shape`` was broadcast."""
    if grad.shape == shape:
        return grad
    leading = grad.ndim - len(shape)
    axes = tuple(range(leading)) + tuple(
        leading + i for i, n in enumerate(shape) if n == 1 and grad.shape[leading + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class Add(Function):
    """a + b, broadcast. d/da = 1, d/db = 1."""
    saves_values = False

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, grad):
        return unbroadcast(grad, self.shapes[0]), unbroadcast(grad, self.shapes[1])


class Sub(Function):
    """a - b, broadcast. d/da = 1, d/db = -1."""
    saves_values = False

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, grad):
        return unbroadcast(grad, self.shapes[0]), unbroadcast(-grad, self.shapes[1])


class Mul(Function):
    """a * b, broadcast. d/da = b, d/db = a."""
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        needs_a, needs_b = self.needs_input_grad  # e.g. x * 0.5 needs no grad for 0.5
        return (unbroadcast(grad * self.b, self.a.shape) if needs_a else None,
                unbroadcast(grad * self.a, self.b.shape) if needs_b else None)


class Div(Function):
    """a / b, broadcast. d/da = 1/b, d/db = -a/b**2."""
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        ga = grad / self.b
        needs_b = self.needs_input_grad[1]
        return (unbroadcast(ga, self.a.shape),
                unbroadcast(-ga * self.a / self.b, self.b.shape) if needs_b else None)


class Neg(Function):
    """-a. d/da = -1."""
    saves_values = False

    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad


class Pow(Function):
    """a ** b, broadcast. d/da = b a^(b-1), taken as 0 where b = 0 (a^0 is constant, but
    0 * 0^-1 would be NaN at a = 0; PyTorch's rule); d/db = a^b log(a), 0 where a <= 0."""
    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, grad):
        xp = self.xp
        needs_a, needs_b = self.needs_input_grad
        ga = gb = None
        if needs_a:
            exponent = xp.where(self.b == 0, 1, self.b - 1)  # any finite power times b = 0
            ga = unbroadcast(grad * self.b * self.a ** exponent, self.a.shape)
        if needs_b:
            log_a = xp.log(xp.where(self.a > 0, self.a, 1))
            gb = unbroadcast(grad * self.out * log_a, self.b.shape)
        return ga, gb


class Exp(Function):
    """exp(a). d/da = exp(a), reusing the output."""
    def forward(self, a):
        self.out = self.xp.exp(a)
        return self.out

    def backward(self, grad):
        return grad * self.out


class Log(Function):
    """log(a). d/da = 1/a."""
    def forward(self, a):
        self.a = a
        return self.xp.log(a)

    def backward(self, grad):
        return grad / self.a


class Sqrt(Function):
    """sqrt(a). d/da = 1 / (2 sqrt(a)), reusing the output."""
    def forward(self, a):
        self.out = self.xp.sqrt(a)
        return self.out

    def backward(self, grad):
        return grad / (2 * self.out)


class Tanh(Function):
    """tanh(a). d/da = 1 - tanh(a)^2, reusing the output."""
    def forward(self, a):
        self.out = self.xp.tanh(a)
        return self.out

    def backward(self, grad):
        return grad * (1 - self.out * self.out)


class Maximum(Function):
    """max(a, b) elementwise, broadcast. The gradient goes to the larger input; at ties
    it is split evenly, so that max(a, a) has gradient 1 like a itself."""
    def forward(self, a, b):
        self.a, self.b = a, b
        return self.xp.maximum(a, b)

    def backward(self, grad):
        a_wins = (self.a > self.b) + 0.5 * (self.a == self.b)
        a_wins = a_wins.astype(grad.dtype, copy=False)
        return (unbroadcast(grad * a_wins, self.a.shape),
                unbroadcast(grad * (1 - a_wins), self.b.shape))


class ReLU(Function):
    """max(a, 0); any shape. d/da = 1 where a > 0, else 0 (0 at the kink, like PyTorch)."""
    def forward(self, a):
        self.positive = a > 0
        return self.xp.maximum(a, 0)

    def backward(self, grad):
        return grad * self.positive


class Where(Function):
    """where(condition, a, b), broadcast; ``condition`` is a boolean array, not differentiated.
    d/da = condition, d/db = not condition."""
    saves_values = False

    def forward(self, a, b, condition):
        self.condition, self.shapes = condition, (a.shape, b.shape)
        return self.xp.where(condition, a, b)

    def backward(self, grad):
        zero = grad.dtype.type(0)
        xp = self.xp
        return (unbroadcast(xp.where(self.condition, grad, zero), self.shapes[0]),
                unbroadcast(xp.where(self.condition, zero, grad), self.shapes[1]))
