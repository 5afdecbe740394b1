"""Learning-rate schedules: plain functions from the step number to a learning rate.

Steps count optimizer updates from 1; step 0 is treated as step 1, so a loop that
counts from 0 never trains with a learning rate of 0. Being plain functions they are
easy to plot and to test. Bind the options with ``functools.partial`` (or a lambda)
and give the result to ``fit(schedule=...)``, or apply it by hand before each update::

    schedule = functools.partial(noam, d_model=512, warmup=4000)
    optimizer.lr = schedule(step)
"""
import math

from .. import arguments


def noam(step, d_model, warmup, factor=1.0):
    """The schedule of "Attention Is All You Need" (section 5.3), named after Noam Shazeer:
    ``factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``.

    It rises linearly for ``warmup`` steps, peaks at ``factor / sqrt(d_model * warmup)``
    at step ``warmup``, then decays as ``1 / sqrt(step)``. The value is the learning rate
    itself (the paper pairs it with Adam, betas=(0.9, 0.98), eps=1e-9).
    """
    arguments.integer("noam", "step", step, low=0)
    arguments.integer("noam", "d_model", d_model, low=1)
    arguments.integer("noam", "warmup", warmup, low=1)
    step = max(step, 1)
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def warmup_cosine(step, max_lr, warmup, total, min_lr=0.0):
    """Linear warmup from 0 to ``max_lr`` over ``warmup`` steps, then half a cosine down
    to ``min_lr`` at step ``total``, and ``min_lr`` after that (nanoGPT's schedule)."""
    arguments.integer("warmup_cosine", "step", step, low=0)
    arguments.integer("warmup_cosine", "warmup", warmup, low=0)
    arguments.integer("warmup_cosine", "total", total, low=warmup + 1,
                      expected=f"an integer greater than warmup={warmup}")
    step = max(step, 1)
    if step < warmup:
        return max_lr * step / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step, lr, warmup):
    """Linear warmup from 0 to ``lr`` over ``warmup`` steps, then constant ``lr``."""
    arguments.integer("warmup_constant", "step", step, low=0)
    arguments.integer("warmup_constant", "warmup", warmup, low=0)
    return lr * min(1.0, max(step, 1) / warmup) if warmup else lr

