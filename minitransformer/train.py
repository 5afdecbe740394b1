"""A small training loop, ``fit``, shared by every demo.

One optimizer step, written out::

    optimizer.lr = schedule(step)                      # if there is a schedule
    model.zero_grad()
    for each of the accumulate_steps micro-batches:
        loss = loss_fn(model, next_batch)
        (loss / accumulate_steps).backward()           # gradients add up over micro-batches
    clip_grad_norm(model.parameters(), clip_norm)      # if clipping
    optimizer.step()

With a mean loss and equal micro-batches, k accumulated micro-batches give the same
gradient as one batch k times as large, in the memory of a small one.

With ``precision="float16"`` each micro-batch runs on float16 copies of the weights and
backpropagates ``loss * scale``; the gradients are divided by the scale before clipping,
and a step whose gradients overflowed is skipped (see ``precision``).
"""
import contextlib
import dataclasses
import math
import numbers
import time

from . import arguments
from .autograd import Tensor, no_grad
from .backend import manual_seed
from .optim import clip_grad_norm, grad_norm
from .precision import LossScaler, half_precision


@dataclasses.dataclass
class History:
    """What ``fit`` records, one entry per optimizer step (``evals``: per evaluation)."""
    steps: list = dataclasses.field(default_factory=list)
    losses: list = dataclasses.field(default_factory=list)  # mean over the micro-batches
    lrs: list = dataclasses.field(default_factory=list)
    grad_norms: list = dataclasses.field(default_factory=list)  # before clipping; if clipping
    tokens: list = dataclasses.field(default_factory=list)
    evals: list = dataclasses.field(default_factory=list)  # (step, what eval_fn returned)
    skipped: list = dataclasses.field(default_factory=list)  # float16: overflowed steps


def count_tokens(batch):
    """The default token count of a batch: the number of elements of its first array,
    e.g. B * L for a batch ``(inputs, targets)`` of ``(B, L)`` token ids. Tuples, lists
    and dicts are searched first item first; anything without a ``size`` counts 0."""
    while isinstance(batch, (tuple, list, dict)) and batch:
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return int(getattr(batch, "size", 0))


def fit(model, optimizer, batches, loss_fn, steps, *, start_step=0, schedule=None,
        clip_norm=None, accumulate_steps=1, eval_fn=None, eval_every=None, log_every=100,
        seed=None, count_tokens=count_tokens, callback=None, precision="float32",
        loss_scaler=None):
    """Train ``model`` for the optimizer steps ``start_step + 1, ..., steps``; returns a
    ``History``.

    What to train on:
    steps:       the number of the last step (not a count, so a resumed run keeps it).
    start_step:  the step already done, when resuming from a checkpoint.
    batches:     an iterable of batches, or a function of no arguments returning the next
                 one. A function that draws from ``backend.rng()`` resumes exactly from a
                 checkpoint, since the checkpoint stores that generator's state.
    loss_fn:     ``loss_fn(model, batch)`` -> a one-element loss Tensor.
    seed:        if given, ``manual_seed(seed)`` first, for a reproducible run.

    How each step computes its update:
    schedule:    ``schedule(step)`` -> the learning rate for that step (see ``optim``).
    accumulate_steps: micro-batches per optimizer step, each loss scaled by 1/k.
    clip_norm:   clip the global gradient norm to this (``optim.clip_grad_norm``).
    precision:   ``"float32"``, or ``"float16"``: mixed precision, as the module docstring
                 says; a skipped step's number goes to ``history.skipped``.
    loss_scaler: float16's ``LossScaler`` (default ``LossScaler()``); to resume such a run
                 exactly, save and load it with the checkpoint (``loss_scaler=`` of both).

    What is reported (``_Progress``):
    eval_fn:     ``eval_fn(model)`` -> anything (a float, a dict of metrics), run in eval
                 mode without a graph every ``eval_every`` steps and after the last step.
    log_every:   print a progress line every so many steps (0 or None: silent).
    count_tokens: ``count_tokens(batch)`` -> tokens in the batch, for the tokens/s figure.
    callback:    ``callback(step, history)`` after each step, e.g. to save a checkpoint.

    A loss or (in float32) a gradient norm that is inf or nan stops training with a
    ``FloatingPointError`` naming the step, before it reaches the parameters.
    """
    _check_arguments(steps, start_step, accumulate_steps, clip_norm, eval_every)
    scaler = _loss_scaler(model, precision, loss_scaler)
    next_batch = _batch_function(batches)
    if seed is not None:
        manual_seed(seed)
    progress = _Progress(steps, eval_fn, eval_every, log_every)
    history = progress.history
    model.train()
    for step in range(start_step + 1, steps + 1):
        started = time.perf_counter()
        if schedule is not None:
            optimizer.lr = schedule(step)
        model.zero_grad()
        loss, tokens = _accumulate_gradients(model, loss_fn, next_batch, step,
                                             accumulate_steps, count_tokens, scaler)
        if scaler is not None and not scaler.unscale_(model.parameters()):
            history.skipped.append(step)  # an overflow: no update, a smaller scale next
            if clip_norm is not None:  # one norm per step, inf or nan here
                history.grad_norms.append(grad_norm(model.parameters()))
        else:
            _finite_gradients(model, clip_norm, history, step, loss)
            optimizer.step()
        progress.record(model, step, loss, optimizer.lr, tokens, time.perf_counter() - started)
        if callback is not None:
            callback(step, history)
    return history


class _Progress:
    """``fit``'s bookkeeping: the ``History``, the evaluations and the progress lines,
    whose tokens/s count training time only (no evaluation, no saving)."""

    def __init__(self, steps, eval_fn, eval_every, log_every):
        self.steps, self.eval_fn, self.eval_every, self.log_every = (steps, eval_fn,
                                                                     eval_every, log_every)
        self.history = History()
        self.tokens, self.seconds = 0, 0.0  # since the last progress line

    def record(self, model, step, loss, lr, tokens, seconds):
        """Note step ``step``, then evaluate and print a line if it is time."""
        history = self.history
        history.steps.append(step)
        history.losses.append(loss)
        history.lrs.append(lr)
        history.tokens.append(tokens)
        evaluated = self.eval_fn is not None and (
            step == self.steps or (self.eval_every and step % self.eval_every == 0))
        if evaluated:
            model.eval()
            with no_grad():
                history.evals.append((step, self.eval_fn(model)))
            model.train()
        self.tokens, self.seconds = self.tokens + tokens, self.seconds + seconds
        if self.log_every and (step % self.log_every == 0 or evaluated or step == self.steps):
            print(self._line(self.tokens / max(self.seconds, 1e-9), evaluated))
            self.tokens, self.seconds = 0, 0.0

    def _line(self, tokens_per_second, evaluated):
        history, steps = self.history, self.steps
        line = (f"step {history.steps[-1]:>{len(str(steps))}}/{steps} | "
                f"loss {history.losses[-1]:.4f} | lr {history.lrs[-1]:.3e} | "
                f"{tokens_per_second:,.0f} tok/s")
        if evaluated:
            result = history.evals[-1][1]
            if isinstance(result, dict):
                result = " ".join(f"{k} {_format(v)}" for k, v in result.items())
            line += f" | eval {_format(result)}"
        return line


def _accumulate_gradients(model, loss_fn, next_batch, step, accumulate_steps, count_tokens,
                          scaler):
    """Forward and backward over ``accumulate_steps`` micro-batches (in float16 with a
    scaled loss if there is a loss ``scaler``); returns the mean loss and the number of
    tokens seen."""
    loss_sum, tokens = 0.0, 0
    factor = (1.0 if scaler is None else scaler.scale) / accumulate_steps
    for micro in range(accumulate_steps):
        where = f"step {step}" + (f" (micro-batch {micro + 1} of {accumulate_steps})"
                                  if accumulate_steps > 1 else "")
        try:
            batch = next_batch()
        except StopIteration:
            raise RuntimeError(f"fit: the batches ran out at {where}; pass an endless "
                               "iterable (e.g. itertools.cycle) or fewer steps") from None
        with contextlib.nullcontext() if scaler is None else half_precision(model):
            loss = loss_fn(model, batch)
            loss_sum += _finite_loss(loss, where, step)
            tokens += count_tokens(batch)
            (loss * factor if factor != 1 else loss).backward()
    return loss_sum / accumulate_steps, tokens


def _format(value):
    is_fraction = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    return f"{value:.4f}" if is_fraction else str(value)


def _finite_loss(loss, where, step):
    """The loss as a float, after checking that it is a finite one-element Tensor."""
    if not isinstance(loss, Tensor) or loss.size != 1:
        what = f"shape {loss.shape}" if isinstance(loss, Tensor) else type(loss).__name__
        raise TypeError(f"fit: loss_fn must return a one-element Tensor, got {what}")
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(
            f"fit: the loss is {value} at {where}; the parameters are as after step {step - 1}. "
            "Try a lower learning rate, gradient clipping (clip_norm=1.0) or a longer warmup")
    return value


def _finite_gradients(model, clip_norm, history, step, loss):
    """Clip the gradients if asked; refuse a step on an inf or nan gradient norm, which
    would write NaN into every parameter (a finite loss can still have one)."""
    params = model.parameters()
    if clip_norm is None:
        norm = grad_norm(params)
    else:
        norm = clip_grad_norm(params, clip_norm)
        history.grad_norms.append(norm)
    if not math.isfinite(norm):
        raise FloatingPointError(
            f"fit: the gradient norm is {norm} at step {step} (the loss, {loss:.6g}, is finite); "
            f"no parameter was changed: they are as after step {step - 1}. Look for an op whose "
            "gradient overflows (e.g. sqrt or log at 0), or lower the learning rate")


def _loss_scaler(model, precision, loss_scaler):
    """The loss scaler for ``precision`` (None in float32), after checking the options."""
    if precision not in ("float32", "float16"):
        raise ValueError(f"fit: precision must be 'float32' or 'float16', got {precision!r}")
    if precision == "float32":
        if loss_scaler is not None:
            raise ValueError("fit: loss_scaler is for precision='float16'")
        return None
    wrong = sorted({str(p.dtype) for p in model.parameters()} - {"float32"})
    if wrong:
        raise TypeError(f"fit: precision='float16' keeps float32 master weights, but the "
                        f"model has {', '.join(wrong)} parameters; model.to(dtype='float32')")
    if loss_scaler is not None and not isinstance(loss_scaler, LossScaler):
        raise TypeError(f"fit: loss_scaler must be a precision.LossScaler, got "
                        f"{type(loss_scaler).__name__}; e.g. LossScaler(scale={loss_scaler!r})")
    return LossScaler() if loss_scaler is None else loss_scaler


def _batch_function(batches):
    """A function of no arguments returning the next batch (raising StopIteration at
    the end), from an iterable or from such a function."""
    if callable(batches):
        return batches
    try:
        return iter(batches).__next__
    except TypeError:
        raise TypeError(f"fit: batches must be an iterable of batches or a function "
                        f"returning one, got {type(batches).__name__}") from None


def _check_arguments(steps, start_step, accumulate_steps, clip_norm, eval_every):
    for name, value, lowest in (("steps", steps, 1), ("start_step", start_step, 0),
                                ("accumulate_steps", accumulate_steps, 1),
                                ("eval_every", eval_every or 0, 0)):
        arguments.integer("fit", name, value, low=lowest)
    if start_step >= steps:
        raise ValueError(f"fit: start_step={start_step} leaves nothing to do with "
                         f"steps={steps}; steps is the last step number, not a count")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"fit: clip_norm must be > 0 or None, got {clip_norm}")
