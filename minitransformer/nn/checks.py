"""Checks of the Tensors and arrays that reach a layer or a model -- shape, dtype,
device, masks, token ids -- so that a wrong one fails at the public entry point with a
message naming the argument, what was expected and what was given, not deep inside a
matmul. (Plain Python arguments -- sizes, rates, flags, axes -- are ``arguments``'.)"""
from .. import arguments, backend
from ..autograd import Tensor, as_array


def check_features(owner, name, x, size, size_name="d_model"):
    """``x`` must be a (B, L, size) Tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: {name} must be a Tensor, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{owner}: {name} has shape {x.shape}, expected (B, L, {size_name})")
    if x.shape[-1] != size:
        raise ValueError(f"{owner}: {name} has last dim {x.shape[-1]}, expected "
                         f"{size_name}={size}")


def check_device(owner, name, x, device, fix=None):
    """``x``, a Tensor or an array, must live on the module's ``device``."""
    where = x.device if isinstance(x, Tensor) else backend.device_of(x)
    if where != device:
        raise backend.DeviceError(f"{owner}: {name} is on {where!r} but the parameters are on "
                                  f"{device!r}; " + (fix or f"move one of them with "
                                                     f".to({device!r}) or .to({where!r})"))


def check_mask(owner, name, mask, shape, device):
    """``mask`` must be None or a boolean array/Tensor on ``device``, broadcastable to
    ``shape`` (B, H, Lq, Lk). Returns the mask as an array (or None)."""
    if mask is None:
        return None
    data = mask.data if isinstance(mask, Tensor) else mask
    if not backend.is_array(data) or data.dtype != bool:
        given = getattr(data, "dtype", type(data).__name__)
        raise TypeError(f"{owner}: {name} must be a boolean array (True = may attend), "
                        f"got {given}")
    arguments.broadcastable(owner, name, data.shape, shape, "(B, H, Lq, Lk)")
    check_device(owner, name, data, device, f"build it on {device!r}")
    return data


def check_ids(owner, name, ids, vocab_size, device):
    """``ids`` must be a (B, L) integer Tensor or array on ``device`` (or a nested list,
    put there) with values in [0, vocab_size). Returns it as an array."""
    data = as_array(ids, device) if isinstance(ids, (list, tuple)) else ids
    data = data.data if isinstance(data, Tensor) else data
    if not backend.is_array(data) or data.dtype.kind not in "iu":
        given = getattr(data, "dtype", type(data).__name__)
        raise TypeError(f"{owner}: {name} must be integer token ids, got {given}")
    if data.ndim != 2:
        raise ValueError(f"{owner}: {name} has shape {data.shape}, expected (B, L)")
    check_device(owner, name, data, device, f"move it with mt.tensor({name}, device={device!r})")
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if low < 0 or high >= vocab_size:
        raise ValueError(f"{owner}: {name} contains id {low if low < 0 else high}, outside "
                         f"the vocabulary [0, {vocab_size})")
    return data
