"""Optimizers, gradient clipping and learning-rate schedules.

Read ``optimizer`` (parameter groups, state, clipping) first, then ``sgd``, ``adam``
and ``schedules``.
"""
from .adam import Adam, AdamW
from .optimizer import Optimizer, clip_grad_norm, grad_norm, param_groups_for_weight_decay
from .schedules import noam, warmup_constant, warmup_cosine
from .sgd import SGD
