"""Ops that move elements around without changing them: reshape, transpose,
indexing, concatenation and the copy to another device. Each backward puts the
gradient back where the element came from."""
import itertools

from .. import arguments, backend
from ..autograd import Function, Tensor


class Reshape(Function):
    """reshape to ``shape``. The gradient is reshaped back."""
    saves_values = False

    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, grad):
        return grad.reshape(self.shape)


def reshape(a, *shape):
    """``a`` with a new shape of the same size, given as ints or one tuple (-1 infers one)."""
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape.apply(a, shape=tuple(shape))


class Transpose(Function):
    """permute axes by ``axes`` (all axes reversed when None). The gradient is permuted
    by the inverse permutation."""
    saves_values = False

    def forward(self, a, axes=None):
        self.axes = tuple(reversed(range(a.ndim))) if axes is None else axes
        if sorted(self.axes) != list(range(a.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of {a.ndim} dims")
        return a.transpose(self.axes)

    def backward(self, grad):
        inverse = [self.axes.index(i) for i in range(len(self.axes))]  # where axis i went
        return grad.transpose(inverse)


def transpose(a, *axes):
    """Permute axes (reverse them when none are given), like ``ndarray.transpose``."""
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    if axes:
        axes = tuple(arguments.single_axis("transpose", ax, a.ndim) for ax in axes)
    return Transpose.apply(a, axes=axes or None)


def swapaxes(a, axis1, axis2):
    """``a`` with ``axis1`` and ``axis2`` exchanged."""
    axis1, axis2 = (arguments.single_axis("swapaxes", ax, a.ndim) for ax in (axis1, axis2))
    axes = list(range(a.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose.apply(a, axes=tuple(axes))


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


def getitem(a, index):
    """``a[index]``; integer index arrays may be Tensors, and are range-checked."""
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    check_index_bounds(a.shape, index)
    return GetItem.apply(a, index=index)


class Concatenate(Function):
    """concatenate inputs along ``axis``. Each input gets its slice of the gradient."""
    saves_values = False

    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return self.xp.concatenate(arrays, axis=axis)

    def backward(self, grad):
        ends = list(itertools.accumulate(self.sizes))  # where each input's slice ends
        return tuple(self.xp.split(grad, ends[:-1], axis=self.axis))


def concatenate(tensors, axis=0):
    """The tensors joined along an existing ``axis``."""
    tensors = list(tensors)
    ndim = tensors[0].ndim if tensors else 0
    return Concatenate.apply(*tensors, axis=arguments.single_axis("concatenate", axis, ndim))


class Stack(Function):
    """stack inputs along a new ``axis``. Each input gets its slice of the gradient."""
    saves_values = False

    def forward(self, *arrays, axis=0):
        self.axis = axis
        return self.xp.stack(arrays, axis=axis)

    def backward(self, grad):
        n = grad.shape[self.axis]
        return tuple(self.xp.take(grad, i, axis=self.axis) for i in range(n))


def stack(tensors, axis=0):
    """The tensors (all of one shape) joined along a new ``axis``."""
    tensors = list(tensors)
    ndim = tensors[0].ndim + 1 if tensors else 1
    return Stack.apply(*tensors, axis=arguments.single_axis("stack", axis, ndim))


class ToDevice(Function):
    """Copy to another device. The gradient is copied back."""
    saves_values = False

    def forward(self, a, device):
        self.source = backend.device_of(a)
        return backend.to_device(a, device)

    def backward(self, grad):
        return backend.to_device(grad, self.source)


def to(a, device):
    """This tensor on ``device`` (``"cpu"`` or ``"gpu"``); differentiable."""
    device = backend.check_device(device)
    return a if a.device == device else ToDevice.apply(a, device=device)
