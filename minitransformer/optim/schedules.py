"""Learning-rate schedules: plain functions from the step number to a learning rate.

Steps count optimizer updates from 1; step 0 is treated as step 1, so a loop that
counts from 0 never trains with a learning rate of 0. Being plain functions they are
easy to plot and to test. Bind the options with ``functools.partial`` (or a lambda)
and give the result to ``fit(schedule=...)``, or apply it by hand before each update::

    schedule = functools.partial(noam, d_model=512, warmup=4000)
    optimizer.lr = schedule(step)
"""
import math
import numbers


def noam(step, d_model, warmup, factor=1.0):
    """The schedule of "Attention Is All You Need" (section 5.3), named after Noam Shazeer:
    ``factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``.

    It rises linearly for ``warmup`` steps, peaks at ``factor / sqrt(d_model * warmup)``
    at step ``warmup``, then decays as ``1 / sqrt(step)``. The value is the learning rate
    itself (the paper pairs it with Adam, betas=(0.9, 0.98), eps=1e-9).
    """
    _check_count("noam", "step", step)
    _check_count("noam", "d_model", d_model, lowest=1)
    _check_count("noam", "warmup", warmup, lowest=1)
    step = max(step, 1)
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def warmup_cosine(step, max_lr, warmup, total, min_lr=0.0):
    """Linear warmup from 0 to ``max_lr`` over ``warmup`` steps, then half a cosine down
    to ``min_lr`` at step ``total``, and ``min_lr`` after that (nanoGPT's schedule)."""
    _check_count("warmup_cosine", "step", step)
    _check_count("warmup_cosine", "warmup", warmup)
    if not (isinstance(total, numbers.Integral) and total > warmup):
        raise ValueError(f"warmup_cosine: total must be an integer greater than "
                         f"warmup={warmup}, got {total!r}")
    step = max(step, 1)
    if step < warmup:
        return max_lr * step / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step, lr, warmup):
    """Linear warmup from 0 to ``lr`` over ``warmup`` steps, then constant ``lr``."""
    _check_count("warmup_constant", "step", step)
    _check_count("warmup_constant", "warmup", warmup)
    return lr * min(1.0, max(step, 1) / warmup) if warmup else lr


def _check_count(name, what, value, lowest=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest:
        raise ValueError(f"{name}: {what} must be an integer >= {lowest}, got {value!r}")
