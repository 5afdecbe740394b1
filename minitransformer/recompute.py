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
        fresh = iter(inputs)
        with no_grad(enabled=True), backend.rng_replay(self.rng_mark, self.device):
            out = self.fn(*(next(fresh) if isinstance(a, Tensor) else a for a in self.args),
                          **self.kwargs)
        out.backward(grad)
        return tuple(t.grad for t in inputs)


def recompute(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (a Tensor), without keeping the graph inside ``fn``: it is
    rebuilt during the backward pass. ``fn`` must be deterministic apart from its random
    draws (dropout), which are replayed. Every Tensor with a graph that ``fn`` reads must
    be one of ``args``; other arguments (None, masks, flags), keyword arguments too, are
    passed on as they are, and parameters may come from a closure, e.g.
    ``recompute(lambda h: block(h, mask), x)``."""
    if not callable(fn):
        raise TypeError(f"recompute: fn must be a function or module to call, got "
                        f"{type(fn).__name__}; the tensors go after it: recompute(fn, x)")
    tensor_keywords = [key for key, value in kwargs.items() if isinstance(value, Tensor)]
    if tensor_keywords:
        raise TypeError(f"recompute: pass Tensors positionally, so that their gradients "
                        f"flow back; got {tensor_keywords} as keyword arguments")
    inputs = [a for a in args if isinstance(a, Tensor)]
    if not inputs:
        given = [type(a).__name__ for a in args]
        raise TypeError(f"recompute: at least one argument must be a Tensor (the inputs "
                        f"whose gradients flow back), got {given}")
    if not is_grad_enabled():
        return fn(*args, **kwargs)
    device = inputs[0].device
    rng_mark = backend.rng_fork(device)
    out = fn(*args, **kwargs)  # its graph is dropped on return: built for requires_grad
    if not isinstance(out, Tensor):
        raise TypeError(f"recompute: fn must return one Tensor, got {type(out).__name__}; "
                        "recompute each output's function separately")
    if not out.requires_grad:
        return out
    node, result = Recompute(), Tensor(out.data)
    node.record(inputs, [result])  # backward will refuse inputs changed in place after this
    node.xp, node.args, node.kwargs, node.fn = out.xp, args, kwargs, fn
    node.rng_mark, node.device = rng_mark, device
    return result
