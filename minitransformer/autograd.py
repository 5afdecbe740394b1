"""Reverse-mode automatic differentiation: ``Tensor``, ``Function`` and ``backward``.

A ``Tensor`` wraps a backend array (``.data``). Every differentiable operation is a
``Function`` subclass: ``forward`` on arrays, ``backward`` from the gradients of its
outputs (usually one) to those of its inputs. ``Function.apply`` runs the forward pass
and, when some input requires a gradient, records the function as each output's
``_ctx``: the graph is the chain of ``_ctx.inputs`` links. ``Tensor.backward`` runs each
function's backward once all of its outputs' gradients are in (reverse topological
order, found with an explicit stack: a 10,000-op chain is fine), freeing as it goes.

A function holds its inputs but only weak references to its outputs: the graph has no
reference cycles, and reference counting frees it as soon as its last tensor goes away.

Changing an array in place between the forward pass and ``backward`` would silently
give wrong gradients, so ``backward`` refuses when a function's inputs or output changed
(see ``Function.check_unchanged``).
"""
import contextlib
import reprlib
import threading
import weakref

from . import backend

_local = threading.local()  # no_grad is per thread, like PyTorch's grad mode


@contextlib.contextmanager
def no_grad(enabled=False):
    """Within this block, operations record no graph (for evaluation and decoding);
    ``no_grad(enabled=True)`` records one again, even inside an outer ``no_grad``.
    It affects only the calling thread."""
    previous, _local.grad_enabled = is_grad_enabled(), enabled
    try:
        yield
    finally:
        _local.grad_enabled = previous


def is_grad_enabled():
    return getattr(_local, "grad_enabled", True)


def _check_differentiable(owner, dtype):
    if dtype.kind != "f":
        raise TypeError(f"{owner}: requires_grad needs a real floating dtype (float16/32/64), "
                        f"got {dtype}; convert first, e.g. mt.tensor(x, dtype='float32')")


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    Use ``minitransformer.tensor(...)`` to make one. Arithmetic operators and methods
    such as ``.sum()``, ``.reshape()`` and ``@`` are installed by ``minitransformer.ops``.
    """
    __array_priority__ = 1000  # so ``ndarray + Tensor`` defers to Tensor.__radd__

    def __init__(self, data, requires_grad=False):
        if requires_grad:
            _check_differentiable(type(self).__name__, data.dtype)
        self._version = 0  # in-place writes through .data, e.g. ``x.data += 1``
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._ctx = None
        self._was_freed = False  # set once backward() has consumed this node's graph

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, array):
        # ``x.data -= lr * g`` writes into the array and assigns the same array back: an
        # in-place change. Assigning a new array leaves the graph's saved arrays intact.
        if array is getattr(self, "_data", None):
            self._version += 1
        self._data = array

    # ---- array facts: those of the data ---------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data), doc='"cpu" or "gpu"')

    @property
    def xp(self):
        """The array module (numpy or cupy) that owns this tensor's data."""
        return backend.get_array_module(self.data)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor; use .item() for its value")
        return len(self.data)

    def __iter__(self):  # rows, like iterating an array; a 0-d tensor has none
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.size} elements is "
                             "ambiguous; reduce it first, e.g. bool((a == b).numpy().all())")
        return bool(self.data)

    __hash__ = object.__hash__  # by identity, though == compares elements (as in PyTorch)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({self.numpy()!r}, device={self.device!r}{grad})"

    # ---- leaving the graph -----------------------------------------------------
    def numpy(self):
        """A host NumPy copy of the data, on any backend."""
        return backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: tensor has {self.data.size} elements, expected 1")
        return self.data.item()

    def detach(self):
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        if flag:
            _check_differentiable("requires_grad_", self.dtype)
        self.requires_grad = flag
        return self

    # ---- backpropagation ------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the upstream gradient; it defaults to 1 for a one-element tensor.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad "
                               "(no input of it was created with requires_grad=True)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: output has shape {self.shape}; pass grad= "
                                   "(a gradient of the same shape) for a non-scalar output")
            grad = self.xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else self.xp.asarray(grad, self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}, expected {self.shape}")

        grads = {id(self): grad}  # id(tensor) -> the sum of its gradients so far
        leaves = {id(self): self} if self._ctx is None else {}
        for fn in reversed(_topological_order(_creator(self))):
            outputs = [ref() for ref in fn.outputs]  # None: freed, so it got no gradient
            output_grads = [None if out is None else grads.pop(id(out), None)
                            for out in outputs]
            if all(g is None for g in output_grads):
                continue
            fn.check_unchanged(outputs)
            input_grads = fn.backward(*output_grads)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for inp, ig in zip(fn.inputs, input_grads):
                if ig is None or not inp.requires_grad:
                    continue
                if ig.dtype != inp.dtype:  # float32 x * float64 array: x.grad stays float32
                    ig = ig.astype(inp.dtype)
                if ig.shape != inp.shape:
                    raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of "
                                       f"shape {ig.shape} for an input of shape {inp.shape}")
                key = id(inp)
                grads[key] = ig if key not in grads else grads[key] + ig
                if inp._ctx is None:
                    leaves[key] = inp
            for out in outputs:  # free the graph as we go: saved arrays are released
                if out is not None:
                    out._ctx, out._was_freed = None, True
        for key, leaf in leaves.items():  # copy: g may be shared with another input's grad
            g = grads[key]
            leaf.grad = g.copy() if leaf.grad is None else leaf.grad + g


def _creator(tensor):
    """The function that made ``tensor`` (None for a leaf), unless backward used it up."""
    if tensor._was_freed:
        raise RuntimeError("backward: the graph behind this tensor was already used by "
                           "an earlier backward() and has been freed; recompute the "
                           "forward pass to differentiate again")
    return tensor._ctx


def _topological_order(root):
    """The functions behind ``root`` (a Function or None), each after every function
    that made one of its inputs (iterative depth-first search)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
        elif fn is not None and id(fn) not in visited:
            visited.add(id(fn))
            stack.append((fn, True))
            stack.extend((_creator(t), False) for t in fn.inputs if t.requires_grad)
    return order


class Function:
    """One differentiable operation.

    Subclasses implement ``forward(self, *arrays, **options)``, returning an array or a
    tuple of arrays (then ``apply`` returns a tuple of Tensors), and
    ``backward(self, *grads)``: one gradient per output in (``None`` for an output that
    got none, so the op can skip that work, as in Chainer), one per input out (a tuple
    if several; ``None`` for inputs that need none). State that backward needs is saved
    on ``self``; ``self.xp`` is the array module (numpy or cupy) of the inputs. An op
    whose backward needs only shapes sets ``saves_values = False``: changing its inputs
    in place afterwards is then harmless, and not checked.
    """

    inputs = outputs = versions = checksums = ()
    saves_values = True  # False for ops whose backward needs only shapes (add, sum, ...)

    @classmethod
    def apply(cls, *inputs, **options):
        tensors = _as_tensors(cls.__name__, inputs)
        fn = cls()
        fn.xp = tensors[0].xp
        arrays = fn.forward(*(t.data for t in tensors), **options)
        several = isinstance(arrays, tuple)
        outputs = [Tensor(a) for a in (arrays if several else (arrays,))]
        if is_grad_enabled() and any(t.requires_grad for t in tensors):
            fn.record(tensors, outputs)
        return tuple(outputs) if several else outputs[0]

    def record(self, inputs, outputs):
        """Link this function into the graph: it keeps its inputs (the graph's edges) and
        weak references to its outputs, each output points back to it as ``_ctx``, and
        what ``check_unchanged`` compares is noted."""
        self.inputs = inputs
        self.outputs = [weakref.ref(out) for out in outputs]
        for out in outputs:
            out.requires_grad, out._ctx = True, self
        if self.saves_values:
            self.versions = [t._version for t in inputs]
            self.checksums = [(i, t.data, _checksum(t.data))
                              for i, t in enumerate(inputs) if t._ctx is None]

    def check_unchanged(self, outputs):
        """Refuse to run backward on values that changed since the forward pass (whose
        saved arrays it would use). Writes through a tensor (``y.data *= 2``, optimizer
        steps) bump its ``_version``. Users write to leaves (parameters, inputs) through
        the raw array too (``x.data[0] = 5``), which no counter on the Tensor can see, so
        for leaves the array's checksum is compared as well: it works on NumPy and CuPy
        alike (NumPy's ``writeable=False`` flag has no CuPy equivalent, and would refuse
        an optimizer step while any old graph is alive). ``outputs``: those still alive."""
        if not self.saves_values:
            return
        changed = [i for i, (t, v) in enumerate(zip(self.inputs, self.versions))
                   if t._version != v]
        changed += [i for i, array, before in self.checksums if bool(_checksum(array) != before)]
        what = [f"input {i} (shape {self.inputs[i].shape})" for i in changed]
        what += [f"output{f' {i}' if len(outputs) > 1 else ''} (shape {out.shape})"
                 for i, out in enumerate(outputs) if out is not None and out._version]
        if what:
            raise RuntimeError(
                f"backward: the {what[0]} of {type(self).__name__} was modified in place after "
                "the forward pass, so its gradient would be wrong. Redo the forward pass "
                "after changing it, or change a copy (x.data = x.data * 2 assigns a new "
                "array; x.data *= 2 and x.data[...] = v write into the old one)")

    @property
    def needs_input_grad(self):
        """For each input, whether backward must compute its gradient (as in PyTorch's
        ``ctx.needs_input_grad``): skipping the others saves whole matmuls."""
        return [t.requires_grad for t in self.inputs]

    def forward(self, *arrays, **options):
        raise NotImplementedError

    def backward(self, *grads):
        raise NotImplementedError


def _checksum(array):
    """The sum of the array's bits read as unsigned integers, wrapping: a change to any
    one element changes it (several changes could cancel, e.g. swapping two elements).
    Read as 64-bit words where the size allows: half the additions for float32."""
    xp = backend.get_array_module(array)
    flat = xp.ascontiguousarray(array).reshape(-1)
    width = 8 if flat.nbytes % 8 == 0 else flat.itemsize if flat.itemsize in (1, 2, 4) else 1
    return flat.view(f"u{width}").sum(dtype="u8")


def _as_tensors(op_name, values):
    """Wrap arrays and Python scalars as tensors on the device, and in the float dtype,
    of the tensors among ``values``; refuse to mix devices."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    if not tensors:
        raise TypeError(f"{op_name}: expected at least one Tensor argument")
    first = tensors[0]
    first_position = next(i for i, v in enumerate(values) if v is first)
    out = []
    for position, value in enumerate(values):
        if not isinstance(value, Tensor):
            if backend.is_array(value):
                value = Tensor(value)
            else:  # a Python scalar adopts the tensor's dtype: 2 * float32 stays float32
                dtype = first.dtype if first.dtype.kind in "fc" else None
                value = Tensor(first.xp.asarray(value, dtype=dtype))
        if value.device != first.device:
            raise backend.DeviceError(
                f"{op_name}: argument {position} is on {value.device!r} but argument "
                f"{first_position} is on {first.device!r}; move one with .to('cpu') or .to('gpu')")
        out.append(value)
    return out


def tensor(data, requires_grad=False, dtype=None, device=None):
    """Make a tensor on the current backend (or on ``device``: ``"cpu"`` / ``"gpu"``).

    Python floats become float32 (``backend.DEFAULT_DTYPE``); arrays keep their dtype
    unless ``dtype`` is given; integers stay integers (token ids). The tensor always
    owns a copy: an optimizer step on it never rewrites the caller's array.
    """
    if isinstance(data, Tensor):
        data = data.data
    device = backend.check_device(device)
    if not backend.is_array(data):
        data = _host_array(data, dtype)
    data = backend.to_device(data, device)
    data = data.astype(data.dtype if dtype is None else dtype)  # astype copies
    if requires_grad:
        _check_differentiable("tensor", data.dtype)
    return Tensor(data, requires_grad=requires_grad)


def as_array(value, device=None):
    """``value`` (a Tensor, an array, a nested list) as an array on ``device``, or where it
    is (a list: the current backend): the package's one way to make an array of a value."""
    data = value.data if isinstance(value, Tensor) else value
    stays = device is None and backend.is_array(data)
    return backend.to_device(data, backend.device_of(data) if stays else device)


def _host_array(data, dtype):
    """A number or nested list as a host array; Python floats become float32."""
    try:
        array = backend.host.asarray(data, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"tensor: data must be a number or a nested list of numbers with "
                        f"equal lengths at each level, got {reprlib.repr(data)} ({exc})") from None
    if array.dtype.kind not in "biufc":
        raise TypeError(f"tensor: data must hold only numbers, got {reprlib.repr(data)} "
                        f"(dtype {array.dtype}); replace None or strings by numbers, and "
                        "combine Tensors with mt.stack")
    if dtype is None and array.dtype.kind == "f":
        array = array.astype(backend.DEFAULT_DTYPE)
    return array
