"""Elementwise arithmetic with broadcasting.

When NumPy broadcasts an input of shape (3, 1) against (3, 4), each input element is
used 4 times, so its gradient is the sum of the 4 output gradients: ``unbroadcast``
sums the upstream gradient back down to the input's shape.
"""
from .. import backend
from ..autograd import Function, Tensor


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


def add(a, b):
    """a + b, broadcast."""
    return Add.apply(a, b)


class Sub(Function):
    """a - b, broadcast. d/da = 1, d/db = -1."""
    saves_values = False

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, grad):
        return unbroadcast(grad, self.shapes[0]), unbroadcast(-grad, self.shapes[1])


def sub(a, b):
    """a - b, broadcast."""
    return Sub.apply(a, b)


class Mul(Function):
    """a * b, broadcast. d/da = b, d/db = a."""
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        needs_a, needs_b = self.needs_input_grad  # e.g. x * 0.5 needs no grad for 0.5
        return (unbroadcast(grad * self.b, self.a.shape) if needs_a else None,
                unbroadcast(grad * self.a, self.b.shape) if needs_b else None)


def mul(a, b):
    """a * b, broadcast."""
    return Mul.apply(a, b)


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


def div(a, b):
    """a / b, broadcast."""
    return Div.apply(a, b)


class Neg(Function):
    """-a. d/da = -1."""
    saves_values = False

    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad


def neg(a):
    """-a."""
    return Neg.apply(a)


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


def pow(a, b):
    """a ** b, broadcast."""
    return Pow.apply(a, b)


class Exp(Function):
    """exp(a). d/da = exp(a), reusing the output."""
    def forward(self, a):
        self.out = self.xp.exp(a)
        return self.out

    def backward(self, grad):
        return grad * self.out


def exp(a):
    """e ** a, elementwise."""
    return Exp.apply(a)


class Log(Function):
    """log(a). d/da = 1/a."""
    def forward(self, a):
        self.a = a
        return self.xp.log(a)

    def backward(self, grad):
        return grad / self.a


def log(a):
    """Natural logarithm, elementwise."""
    return Log.apply(a)


class Sqrt(Function):
    """sqrt(a). d/da = 1 / (2 sqrt(a)), reusing the output."""
    def forward(self, a):
        self.out = self.xp.sqrt(a)
        return self.out

    def backward(self, grad):
        return grad / (2 * self.out)


def sqrt(a):
    """Square root, elementwise."""
    return Sqrt.apply(a)


class Tanh(Function):
    """tanh(a). d/da = 1 - tanh(a)^2, reusing the output."""
    def forward(self, a):
        self.out = self.xp.tanh(a)
        return self.out

    def backward(self, grad):
        return grad * (1 - self.out * self.out)


def tanh(a):
    """Hyperbolic tangent, elementwise."""
    return Tanh.apply(a)


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


def maximum(a, b):
    """The larger of a and b, elementwise and broadcast."""
    return Maximum.apply(a, b)


class ReLU(Function):
    """max(a, 0); any shape. d/da = 1 where a > 0, else 0 (0 at the kink, like PyTorch)."""
    def forward(self, a):
        self.positive = a > 0
        return self.xp.maximum(a, 0)

    def backward(self, grad):
        return grad * self.positive


def relu(a):
    """max(a, 0), with gradient 0 at 0 (PyTorch's); ``functional.relu`` is this one."""
    return ReLU.apply(a)


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


def where(condition, a, b):
    """Elementwise ``a`` where ``condition`` (a boolean array or tensor) holds, else ``b``."""
    return _where("where", "condition", condition, a, b)


def masked_fill(a, mask, value):
    """``a`` with ``value`` wherever the boolean ``mask`` is True (mask broadcasts to ``a``)."""
    return _where("masked_fill", "mask", mask, value, a)


def _where(op_name, name, condition, a, b):
    condition = condition.data if isinstance(condition, Tensor) else condition
    if not backend.is_array(condition) or condition.dtype != bool:
        raise TypeError(f"{op_name}: {name} must be a boolean array, got "
                        f"{getattr(condition, 'dtype', type(condition).__name__)}")
    device = next((t.device for t in (a, b) if isinstance(t, Tensor)), None)
    if device is not None and backend.device_of(condition) != device:
        raise backend.DeviceError(
            f"{op_name}: {name} is on {backend.device_of(condition)!r} but the tensor is on "
            f"{device!r}; move it with mt.tensor({name}, device={device!r})")
    return Where.apply(a, b, condition=condition)
