"""``Module`` and ``Parameter``: the containers every layer is built from.

A module finds its parameters by looking at its own attributes: a ``Parameter`` is a
parameter, a ``Module`` (or a ``ModuleList`` of them) is a child whose parameters are
its own under a dotted prefix, and any other ``Tensor`` is a buffer (moved with the
module, not trained, not saved). No registration calls are needed.
"""
from .. import backend
from ..autograd import Tensor


class Parameter(Tensor):
    """A tensor that a module trains: ``requires_grad`` is always True."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)


class Module:
    """Base class for layers and models. Subclasses set attributes in ``__init__`` and
    define ``forward``; calling the module calls ``forward``."""

    training = True
    unsaved_state = None  # why state_dict() would lose this module's state, if it would

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    # ---- walking the tree ------------------------------------------------------
    def _members(self):
        """``(name, value)`` for this module's own attributes, in definition order."""
        return vars(self).items()

    def named_children(self):
        return ((name, value) for name, value in self._members() if isinstance(value, Module))

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self):
        """``(dotted name, Parameter)`` pairs, depth first in attribute order; a parameter
        shared by two modules (tied weights) is listed once, under its first name."""
        return self._named_parameters("", set())

    def _named_parameters(self, prefix, seen):
        # A method, not a closure that calls itself: such a closure is a reference
        # cycle (function -> cell -> function) that only the garbage collector frees.
        for name, value in self._members():
            if isinstance(value, Parameter) and id(value) not in seen:
                seen.add(id(value))
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value._named_parameters(f"{prefix}{name}.", seen)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    def _tensors(self):
        """Every Parameter and buffer in the tree, each once."""
        seen = set()
        for module in self.modules():
            for _, value in module._members():
                if isinstance(value, Tensor) and id(value) not in seen:
                    seen.add(id(value))
                    yield value

    # ---- modes and gradients ---------------------------------------------------
    def train(self, mode=True):
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- devices and dtypes ----------------------------------------------------
    @property
    def device(self):
        """Where the module's first parameter (or buffer) lives, "cpu" or "gpu"; None for
        a module without any (Dropout): it has no device and runs wherever its input is."""
        if "device" in vars(self):  # a subclass's own attribute (PyTorch code often sets one)
            return vars(self)["device"]
        for _, value in self._members():  # depth first, as named_parameters
            device = value.device if isinstance(value, (Tensor, Module)) else None
            if device is not None:
                return device
        return None

    @device.setter
    def device(self, value):
        vars(self)["device"] = value

    def to(self, device=None, dtype=None):
        """Move every parameter and buffer, in place, to ``device`` ("cpu" or "gpu")
        and/or cast the floating ones to ``dtype``. Returns the module."""
        for t in self._tensors():
            data = t.data if device is None else backend.to_device(t.data, device)
            if dtype is not None and data.dtype.kind == "f":
                data = data.astype(dtype)
            t.data = data
            if t.grad is not None:
                t.grad = None
        return self

    # ---- saving and loading ----------------------------------------------------
    def state_dict(self):
        """``{dotted name: host NumPy copy}`` of every parameter. Refused if a module
        keeps state elsewhere (``unsaved_state`` says where), which would be lost."""
        for name, module in self.named_modules():
            if module.unsaved_state:
                raise TypeError(f"state_dict: {name or 'the model'} is a "
                                f"{type(module).__name__}, {module.unsaved_state}")
        return {name: p.numpy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays from ``state`` into the parameters, keeping their device and dtype.
        Missing or unexpected names and shape mismatches are errors, listed together."""
        own = dict(self.named_parameters())
        problems = [f"missing {name!r}" for name in own if name not in state]
        problems += [f"unexpected {name!r}" for name in state if name not in own]
        problems += [f"{name!r} has shape {tuple(state[name].shape)} in the state dict but "
                     f"{p.shape} in the model" for name, p in own.items()
                     if name in state and tuple(state[name].shape) != p.shape]
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: "
                             + "; ".join(problems))
        for name, p in own.items():
            value = state[name]
            value = value.data if isinstance(value, Tensor) else value
            p.data = backend.to_device(value, p.device).astype(p.dtype, copy=True)

    def __repr__(self):
        children = "".join(f"\n  ({name}): " + repr(child).replace("\n", "\n  ")
                           for name, child in self.named_children())
        return f"{type(self).__name__}({self.extra_repr()}{children}{chr(10) if children else ''})"

    def extra_repr(self):
        return ""


class ModuleList(Module):
    """A list of modules whose parameters are named ``0.weight``, ``1.weight``, ..."""

    def __init__(self, modules=()):
        self._items = list(modules)

    def _members(self):
        return ((str(i), m) for i, m in enumerate(self._items))

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]

    def __setitem__(self, i, module):
        self._items[i] = module
