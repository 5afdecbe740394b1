"""Numerical gradient checking by central differences.

``gradcheck(fn, inputs)`` compares the gradient that backpropagation computes with
(f(x + eps) - f(x - eps)) / 2 eps, element by element, in float64. The output is
contracted with a random upstream gradient rather than with ones: a ones seed makes
many wrong backward passes (a missing transpose, say) look right.

For large inputs, ``directions=k`` checks the gradient along k random unit directions
instead of every element (Chainer's trick): two forward passes per direction.
"""
from . import backend
from .autograd import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, directions=None):
    """Check the gradients of ``fn(*inputs)`` with respect to every input that requires grad.

    ``inputs``: tensors (float64 for a meaningful check); others are passed through.
    ``fn`` returns one tensor of any shape. Returns True, or raises ``GradcheckError``
    naming the input, the worst element, and both gradient values.
    """
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype != backend.host.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; use float64, "
                            "since float32 round-off swamps central differences")

    rng = backend.host.random.default_rng(seed)
    for i in checked:
        inputs[i].grad = None
    out = fn(*inputs)
    xp = out.xp
    upstream = xp.asarray(rng.standard_normal(out.shape))

    def objective():
        with no_grad():
            return float((fn(*inputs).data * upstream).sum())

    out.backward(upstream)
    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else xp.zeros_like(x.data)
        if directions is None:
            _check_elementwise(i, x, analytic, objective, eps, atol, rtol)
        else:
            _check_directions(i, x, analytic, objective, eps, atol, rtol, rng, directions)
    return True


def _partial_derivative(x, index, objective, eps):
    """d objective / d x[index], by central differences on that one element of x.data,
    written in place whatever its memory layout."""
    data = x.data
    original = data[index].item()
    data[index] = original + eps
    plus = objective()
    data[index] = original - eps
    minus = objective()
    data[index] = original
    return (plus - minus) / (2 * eps)


def _directional_derivative(x, direction, objective, eps):
    """d objective / dx along ``direction`` (an array of x.size), by central differences,
    moving all of x.data in place at once."""
    step, data = direction.reshape(x.shape), x.data
    original = data.copy()
    data += eps * step
    plus = objective()
    data[...] = original - eps * step
    minus = objective()
    data[...] = original
    return (plus - minus) / (2 * eps)


def _check_elementwise(i, x, analytic, objective, eps, atol, rtol):
    analytic = backend.to_numpy(analytic).reshape(-1)
    numeric = backend.host.array([_partial_derivative(x, index, objective, eps)
                                  for index in backend.host.ndindex(x.shape)])
    error = abs(analytic - numeric) - (atol + rtol * abs(numeric))
    error[~backend.host.isfinite(error)] = backend.host.inf  # NaN compares False: count it
    if x.size and error.max() > 0:
        k = int(error.argmax())
        where = tuple(int(j) for j in backend.host.unravel_index(k, x.shape))
        raise GradcheckError(
            f"gradcheck: input {i} (shape {x.shape}) gradient mismatch at index {where}: "
            f"backward gave {analytic[k]:.8g}, central differences gave {numeric[k]:.8g} "
            f"(atol={atol}, rtol={rtol}); {int((error > 0).sum())} of {x.size} elements off")


def _check_directions(i, x, analytic, objective, eps, atol, rtol, rng, directions):
    xp = x.xp
    for d in range(directions):
        direction = rng.standard_normal(x.size)
        direction /= backend.host.linalg.norm(direction) or 1.0
        step = xp.asarray(direction)
        numeric = _directional_derivative(x, step, objective, eps)
        predicted = float((analytic.reshape(-1) * step).sum())
        if not abs(predicted - numeric) <= atol + rtol * abs(numeric):  # NaN fails too
            raise GradcheckError(
                f"gradcheck: input {i} (shape {x.shape}) directional derivative {d} "
                f"mismatch: backward gave {predicted:.8g}, central differences gave "
                f"{numeric:.8g} (atol={atol}, rtol={rtol})")
