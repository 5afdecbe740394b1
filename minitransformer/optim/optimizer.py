"""The ``Optimizer`` base class, weight-decay parameter groups and gradient clipping.

An optimizer holds **parameter groups**: dicts with a ``"params"`` list and the
hyperparameters (``lr``, ``weight_decay``, ...) for those parameters, as in PyTorch.
Pass a plain list of parameters for one group, or a list of dicts to give some
parameters their own options, e.g. no weight decay on biases::

    AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=3e-4)

Each parameter also has a **state** (Adam's moving averages, its step count), created
on its first update. ``state_dict()`` returns both, with host NumPy copies of the
arrays, so a checkpoint can save them and ``load_state_dict`` resume exactly.

Updates work in place on ``param.data`` and never touch ``param.grad``: a float32
model stays float32, and no new parameter arrays are allocated per step.
"""
import math

from .. import arguments, backend
from ..autograd import Tensor


class Optimizer:
    """Base class. Subclasses pass their options with their defaults to ``__init__``
    (every option a group may set; the base knows none but ``lr``), may extend
    ``_checked_option`` for options that are not numbers >= 0, and define
    ``_update(param, state, group)``, which changes ``param.data`` in place from
    ``param.grad``; ``state`` is the parameter's own dict (empty before its first update)."""

    def __init__(self, params, **defaults):
        self.defaults = {k: self._checked_option(k, v) for k, v in defaults.items()}
        self.param_groups = _make_param_groups(self, params)
        self.state = {}  # id(param) -> dict; the groups keep every param (and so its id) alive

    def params(self):
        """Every parameter, group by group, in order."""
        return [p for group in self.param_groups for p in group["params"]]

    @property
    def lr(self):
        """The learning rate (of the first group). Setting it sets every group's, which
        is how a schedule drives the optimizer: ``optimizer.lr = noam(step, 512, 4000)``."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        value = self._checked_option("lr", value)
        for group in self.param_groups:
            group["lr"] = value

    def zero_grad(self):
        """Forget the gradients (set them to None, so the next backward starts afresh)."""
        for p in self.params():
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient; parameters whose ``grad`` is None
        (unused in this forward pass, or frozen) are left alone."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, self.state.setdefault(id(p), {}), group)

    def _update(self, param, state, group):
        raise NotImplementedError

    def _checked_option(self, option, value):
        """One option, validated: a finite number >= 0 (``lr``, ``eps``, ``momentum``,
        ...), made a Python float so that a NumPy float64 never upcasts float32 updates."""
        return arguments.non_negative_number(type(self).__name__, option, value)

    # ---- saving and loading ----------------------------------------------------
    def state_dict(self):
        """``{"param_groups": [options + "params": indices], "state": {index: dict}}``,
        PyTorch's layout: parameters are numbered in order over all groups, and state
        arrays are host NumPy copies."""
        groups, state, index = [], {}, 0
        for group in self.param_groups:
            indices = list(range(index, index + len(group["params"])))
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
            for i, p in zip(indices, group["params"]):
                if id(p) in self.state:
                    state[i] = {k: backend.to_numpy(v) if backend.is_array(v) else v
                                for k, v in self.state[id(p)].items()}
            index += len(indices)
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, state_dict):
        """Restore options and per-parameter state saved by ``state_dict``; arrays go to
        each parameter's device and dtype. The groups must have the same sizes, and
        every array the shape of its parameter."""
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        own_sizes = [len(g["params"]) for g in self.param_groups]
        saved_sizes = [len(g["params"]) for g in saved_groups]
        if own_sizes != saved_sizes:
            raise ValueError(f"{name}.load_state_dict: the saved state has param groups of "
                             f"sizes {saved_sizes}, this optimizer {own_sizes}")
        unknown = sorted({option for g in saved_groups for option in g}
                         - set(self.defaults) - {"params"})
        if unknown:
            raise ValueError(f"{name}.load_state_dict: the saved state has option(s) "
                             f"{unknown}, which {name} does not have; was it saved from "
                             "another kind of optimizer?")
        options = [{k: self._checked_option(k, v) for k, v in g.items() if k != "params"}
                   for g in saved_groups]
        params = self.params()
        new_state = {}
        for i, saved in state_dict["state"].items():
            p = params[int(i)]
            new_state[id(p)] = {key: _to_param(name, key, int(i), value, p)
                                for key, value in saved.items()}
        for group, saved_options in zip(self.param_groups, options):
            group.update(saved_options)
        self.state = new_state


def _to_param(name, key, index, value, param):
    """A saved state entry, moved next to ``param`` if it is an array."""
    if not backend.is_array(value):
        return value
    if value.shape != param.shape:
        raise ValueError(f"{name}.load_state_dict: state {key!r} of parameter {index} has "
                         f"shape {value.shape}, but the parameter has shape {param.shape}")
    return backend.to_device(value, param.device).astype(param.dtype, copy=True)


def _make_param_groups(optimizer, params):
    name, defaults = type(optimizer).__name__, optimizer.defaults
    if isinstance(params, Tensor) or hasattr(params, "named_parameters"):
        raise TypeError(f"{name}: params must be a list of Parameters or of param-group "
                        f"dicts, got a {type(params).__name__}; did you mean model.parameters()?")
    params = list(params)
    if not params:
        raise ValueError(f"{name}: got an empty list of parameters")
    raw_groups = params if isinstance(params[0], dict) else [{"params": params}]
    groups, seen = [], set()
    for g, raw in enumerate(raw_groups):
        if not isinstance(raw, dict) or "params" not in raw:
            raise TypeError(f"{name}: param group {g} must be a dict with a 'params' list, "
                            f"got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(defaults) - {"params"})
        if unknown:
            raise ValueError(f"{name}: param group {g} has unknown option(s) {unknown}; "
                             f"the options are {sorted(defaults)}")
        group_params = list(raw["params"])
        for k, p in enumerate(group_params):
            if not isinstance(p, Tensor) or p.dtype.kind != "f":
                what = p.dtype if isinstance(p, Tensor) else type(p).__name__
                raise TypeError(f"{name}: param group {g} item {k} is {what}, expected a "
                                "floating-point Parameter")
            if id(p) in seen:
                raise ValueError(f"{name}: param group {g} item {k} (shape {p.shape}) "
                                 "appears more than once")
            seen.add(id(p))
        options = {option: optimizer._checked_option(option, raw[option])
                   for option in raw if option != "params"}
        groups.append({**defaults, **options, "params": group_params})
    return groups


def param_groups_for_weight_decay(model, weight_decay):
    """Two param groups for ``model``: matrices decay, everything 1-D does not.

    The rule (nanoGPT's): a parameter with 2 or more dimensions -- Linear weights,
    embedding tables -- is decayed by ``weight_decay``; a parameter with fewer -- biases,
    LayerNorm gains and shifts -- gets ``weight_decay=0``. Shrinking a bias or a norm
    gain towards zero regularizes nothing useful and can hurt. Empty groups are omitted.
    """
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def grad_norm(params):
    """The global L2 norm of the gradients, sqrt(sum_i ||g_i||^2), as a float: inf or
    nan if a gradient holds one. Parameters without a gradient are skipped."""
    return math.sqrt(sum(float(p.grad.ravel() @ p.grad.ravel())
                         for p in params if p.grad is not None))


def clip_grad_norm(params, max_norm):
    """Scale all gradients together, in place, so their global L2 norm is at most
    ``max_norm``; returns the norm before clipping (a float; inf or nan if a gradient is).

    The norm is taken over all gradients at once, sqrt(sum_i ||g_i||^2), so clipping
    keeps the direction of the whole update. Parameters without a gradient are skipped.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm}")
    grads = [p.grad for p in params if p.grad is not None]
    total = grad_norm(params)
    scale = max_norm / (total + 1e-6)  # PyTorch's epsilon: guards a zero norm
    if scale < 1.0:
        for g in grads:
            g *= scale
    return total
