"""minitransformer: a small, readable autograd engine and every Transformer part on it.

Read it in this order: arguments, backend -> autograd -> ops -> gradcheck -> recompute
-> functional -> masks -> nn -> optim -> precision -> train, checkpoint, generate
-> pretrained.
"""
from . import functional, generate, masks, nn, ops, optim, pretrained
from .autograd import Function, Tensor, is_grad_enabled, no_grad, tensor
from .backend import DeviceError, get_backend, gpu_available, manual_seed, set_backend
from .checkpoint import load_checkpoint, save_checkpoint
from .gradcheck import GradcheckError, gradcheck
from .ops import (concatenate, exp, log, masked_fill, matmul, maximum, relu, sqrt,
                  stack, tanh, where)
from .recompute import recompute
from .train import fit

__version__ = "0.1.0"
