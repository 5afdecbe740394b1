"""Ops that move elements around without changing them: reshape, transpose,
indexing and concatenation. Each backward puts the gradient back where the element
came from."""
from ..autograd import Function


class Reshape(Function):
    """reshape to ``shape``. The gradient is reshaped back."""
    saves_values = False

    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, grad):
        return grad.reshape(self.shape)


class Transpose(Function):
    """permute axes by ``axes`` (all axes reversed when None). The gradient is permuted
    by the inverse permutation."""
    saves_values = False

    def forward(self, a, axes=None):
        self.axes = tuple(reversed(range(a.ndim))) if axes is None else axes
        if sorted(self.axes) != list(range(a.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of "
                             f"{a.ndim} dims")
        return a.transpose(self.axes)

    def backward(self, grad):
        inverse = [0] * len(self.axes)
        for i, ax in enumerate(self.axes):
            inverse[ax] = i
        return grad.transpose(inverse)


class GetItem(Function):
    """a[index] for any NumPy index (ints, slices, arrays, masks). Backward scatters
    with ``add.at`` so that an element picked twice gets both gradients."""
    saves_values = False

    def forward(self, a, index):
        self.shape, self.index = a.shape, index
        return a[index]

    def backward(self, grad):
        full = self.xp.zeros(self.shape, dtype=grad.dtype)
        self.xp.add.at(full, self.index, grad)
        return full


class Concatenate(Function):
    """concatenate inputs along ``axis``. Each input gets its slice of the gradient."""
    saves_values = False

    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return self.xp.concatenate(arrays, axis=axis)

    def backward(self, grad):
        bounds = [0]
        for n in self.sizes:
            bounds.append(bounds[-1] + n)
        return tuple(self.xp.split(grad, bounds[1:-1], axis=self.axis))


class Stack(Function):
    """stack inputs along a new ``axis``. Each input gets its slice of the gradient."""
    saves_values = False

    def forward(self, *arrays, axis=0):
        self.axis = axis
        return self.xp.stack(arrays, axis=axis)

    def backward(self, grad):
        n = grad.shape[self.axis]
        return tuple(self.xp.take(grad, i, axis=self.axis) for i in range(n))
