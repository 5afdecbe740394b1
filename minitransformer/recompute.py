"""Activation recomputation (gradient checkpointing): trade compute for memory.

A training step keeps every intermediate array of the forward pass until the backward
pass has used it, so memory grows with depth x batch x length. ``recompute(fn, *x)``
keeps only its inputs and its output: the arrays inside ``fn`` are freed right after the
forward pass and made again, by running ``fn`` once more, when the backward pass reaches
it. Applied to every block of a model, the memory held between the passes is one
(B, L, D) activation per block, plus one block's intermediates at a time during backward;
the price is a second forward pass of each block.

The recomputation must give the very numbers of the first pass, dropout included: the
random generator is marked before ``fn`` runs (``backend.rng_fork``) and replayed for the
recomputation (``backend.rng_replay``). On the CPU the gradients are then bit-identical
to those of the same run without recomputation.
"""
from . import backend
from .autograd import Function, Tensor, is_grad_enabled, no_grad


class Recompute(Function):
    """The output of ``fn``, which ``backward`` recomputes (with a graph this time) from
    the saved inputs and differentiates; parameters inside ``fn`` receive their gradients
    in that inner backward pass, the inputs' gradients are returned."""

    def backward(self, grad):
        inputs = [Tensor(t.data, requires_grad=t.requires_grad) for t in self.inputs]
        args = iter(inputs)
        with no_grad(enabled=True), backend.rng_replay(self.rng_mark, self.device):
            out = self.fn(*(None if a is None else next(args) for a in self.args))
        out.backward(grad)
        return tuple(t.grad for t in inputs)


def recompute(fn, *tensors):
    """``fn(*tensors)`` (a Tensor), without keeping the graph inside ``fn``: it is
    rebuilt during the backward pass. ``fn`` must be deterministic apart from its random
    draws (dropout), which are replayed. Every Tensor with a graph that ``fn`` reads must
    be one of ``tensors`` (None entries are passed on as None); parameters and other
    arguments (masks, flags) may come from a closure, e.g.
    ``recompute(lambda h: block(h, mask), x)``."""
    inputs = [t for t in tensors if t is not None]
    if not all(isinstance(t, Tensor) for t in inputs) or not inputs:
        raise TypeError(f"recompute: tensors must be Tensors (or None), at least one, got "
                        f"{[type(t).__name__ for t in tensors]}")
    if not is_grad_enabled():
        return fn(*tensors)
    device = inputs[0].device
    rng_mark = backend.rng_fork(device)
    out = fn(*tensors)  # its graph is dropped on return; built only to learn requires_grad
    if not out.requires_grad:
        return out
    node = Recompute()
    node.record(inputs)  # backward will refuse inputs changed in place after this
    node.xp, node.args, node.fn = out.xp, tensors, fn
    node.rng_mark, node.device = rng_mark, device
    result = Tensor(out.data, requires_grad=True)
    result._ctx = node
    return result
