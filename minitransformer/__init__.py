"""minitransformer: a small, readable autograd engine and every Transformer part on it.

Read it in this order: backend -> autograd -> ops -> functional -> masks -> nn ->
optim -> training, decoding and demos.
"""
from . import ops
from . import functional, masks
from .autograd import Function, Tensor, is_grad_enabled, no_grad, tensor
from .backend import (DeviceError, get_backend, gpu_available, manual_seed,
                      set_backend)
from .gradcheck import GradcheckError, gradcheck
from .ops import (concatenate, exp, log, masked_fill, matmul, maximum, relu, sqrt,
                  stack, tanh, where)
from . import optim
from .checkpoint import load_checkpoint, save_checkpoint
from .train import fit
from . import pretrained

__version__ = "0.1.0"
