"""Ops that move elements around without changing them: reshape, transpose,
indexing and concatenation. Each backward puts the gradient back where the element
came from."""
from .. import backend
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


def check_index_bounds(shape, index):
    """Refuse out-of-range integer array indices: NumPy raises IndexError for them, but
    CuPy does not check and silently wraps around, so the backends would disagree."""
    parts = index if isinstance(index, tuple) else (index,)
    arrays = [backend.host.asarray(p) if isinstance(p, list) else p for p in parts]
    is_mask = [backend.is_array(p) and p.dtype == bool for p in arrays]
    used = sum(p.ndim if mask else p is not None and p is not Ellipsis
               for p, mask in zip(arrays, is_mask))
    axis = 0
    for p, mask in zip(arrays, is_mask):
        if p is Ellipsis:
            axis += len(shape) - used
        elif mask:
            axis += p.ndim
        elif p is not None:
            if backend.is_array(p) and p.size and axis < len(shape):
                low, high, n = int(p.min()), int(p.max()), shape[axis]
                if low < -n or high >= n:
                    raise IndexError(f"getitem: index {high if high >= n else low} is out of "
                                     f"range for axis {axis} of size {n}")
            axis += 1


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
