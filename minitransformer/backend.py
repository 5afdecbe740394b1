"""Which array library does the math: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports ``numpy`` or ``cupy``. Everything else asks a
tensor for its array module (``tensor.xp``) or asks this module for the current one
(``xp()``), so the same engine code runs unchanged on either device -- the idea behind
Chainer's and DeZero's ``get_array_module``.

Devices are named ``"cpu"`` (NumPy arrays) and ``"gpu"`` (CuPy arrays).

For tests only: the environment variable ``MINITRANSFORMER_CUPY_MODULE`` names a module to
import in place of ``cupy`` (the test suite sets it to ``strict_cupy``, a strict CPU
stand-in in ``tests/``), so the GPU code paths run on every CI machine, subprocesses and
the demos' ``--backend cupy`` included.
"""
import contextlib
import importlib
import os

import numpy

host = numpy
"""NumPy itself, for work that is always on the host: file I/O, data generation."""

DEFAULT_DTYPE = numpy.float32

_BACKENDS = ("numpy", "cupy")
_current = "numpy"
_cupy = None


class DeviceError(RuntimeError):
    """Raised when a GPU is asked for but unavailable, or devices are mixed."""


def _load_cupy():
    """Import CuPy once and check that a GPU is really there."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        cupy = importlib.import_module(os.environ.get("MINITRANSFORMER_CUPY_MODULE", "cupy"))
    except ImportError as exc:
        raise DeviceError("backend 'cupy' needs CuPy, which is not installed; "
                          "install it with: pip install 'minitransformer[gpu]'") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise DeviceError(f"backend 'cupy': no usable CUDA GPU ({exc})") from exc
    if count == 0:
        raise DeviceError("backend 'cupy': CuPy is installed but no CUDA GPU was found")
    _check_gpu_works(cupy)
    _cupy = cupy
    return cupy


def _check_gpu_works(cupy):
    """Run one elementwise kernel (compiled by NVRTC), one matmul (cuBLAS) and one random
    draw (cuRAND), so that an install without the CUDA libraries fails here, as one clear
    error, instead of deep inside the first layer."""
    try:
        a = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
        corner = float(((2 * a + 1) @ a.T)[0, 0])  # [1, 3, 5] . [0, 1, 2]
        draw = cupy.random.default_rng(0).random(3, dtype=cupy.float32)
        works = corner == 13.0 and bool(((0 <= draw) & (draw < 1)).all())
    except Exception as exc:
        raise DeviceError(
            f"backend 'cupy': CuPy is installed but cannot compute on the GPU "
            f"({type(exc).__name__}: {exc}); CuPy 14 needs the CUDA libraries: pip install "
            "'minitransformer[gpu]' (CUDA 12) or 'minitransformer[gpu-cuda13]' (CUDA 13)") from exc
    if not works:
        raise DeviceError("backend 'cupy': a test computation on the GPU gave a wrong result")


def synchronize():
    """Wait until the GPU has finished the work queued so far (CuPy runs asynchronously),
    so that a timer measures the work itself; nothing to wait for on the CPU."""
    if _current == "cupy":
        _cupy.cuda.Device().synchronize()


def gpu_available():
    """True when CuPy imports and sees at least one GPU."""
    try:
        _load_cupy()
    except DeviceError:
        return False
    return True


def set_backend(name):
    """Select the array library for new tensors: ``"numpy"`` or ``"cupy"``."""
    global _current
    if name not in _BACKENDS:
        raise ValueError(f"set_backend: expected one of {_BACKENDS}, got {name!r}")
    if name == "cupy":
        _load_cupy()
    _current = name


def get_backend():
    """The name of the current backend, ``"numpy"`` or ``"cupy"``."""
    return _current


def default_device():
    return "gpu" if _current == "cupy" else "cpu"


def check_device(device):
    """``device`` if it is ``"cpu"`` or ``"gpu"``, the current backend's if None; any
    other name is refused here, the one place every device argument passes through."""
    if device is None:
        return default_device()
    if not (isinstance(device, str) and device in ("cpu", "gpu")):
        hint = "; a CUDA GPU is 'gpu'" if str(device).startswith("cuda") else ""
        raise ValueError(f"device must be 'cpu' or 'gpu' (or None for the current "
                         f"backend's), got {device!r}{hint}")
    return device


def xp(device=None):
    """The array module for ``device`` (default: the current backend's)."""
    return _load_cupy() if check_device(device) == "gpu" else numpy


def get_array_module(array):
    """``numpy`` or ``cupy``, whichever owns ``array``."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    return numpy


def device_of(array):
    return "gpu" if get_array_module(array) is not numpy else "cpu"


def is_array(value):
    """True for a NumPy or CuPy array (not for Python scalars or lists)."""
    return isinstance(value, numpy.ndarray) or (
        _cupy is not None and isinstance(value, _cupy.ndarray))


def to_device(array, device):
    """Copy ``array`` (or a nested list, a number) to ``device`` (``"cpu"`` or ``"gpu"``);
    no copy if already there."""
    device = check_device(device)
    array = array if is_array(array) else numpy.asarray(array)
    if device_of(array) == device:
        return array
    if device == "gpu":
        return _load_cupy().asarray(array)
    return _cupy.asnumpy(array)


def to_numpy(array):
    """A host NumPy copy of ``array``, whatever its device."""
    if device_of(array) == "gpu":
        return _cupy.asnumpy(array)
    return numpy.array(array, copy=True)


_seeds = {"cpu": 0, "gpu": 0}
_generators = {}


def rng(device=None):
    """The random generator of ``device`` (a ``numpy.random.Generator`` on the CPU,
    ``cupy.random.Generator`` on the GPU): used for initialisation, dropout and sampling.
    Each is created on first use from the last ``manual_seed`` (0 if none)."""
    device = check_device(device)
    if device not in _generators:
        _generators[device] = xp(device).random.default_rng(_seeds[device])
    return _generators[device]


def random_bits(shape, device=None):
    """Uniform random uint32 values of ``shape`` from ``device``'s generator (dropout
    compares them with an integer threshold). On the CPU each 64-bit output of the bit
    generator makes two of them: half the generator calls of ``integers(0, 2**32)``."""
    device = check_device(device)
    if device == "gpu":
        return rng(device).integers(0, 2 ** 32, size=shape, dtype=numpy.uint32)
    count = int(numpy.prod(shape))
    raw = rng(device).bit_generator.random_raw((count + 1) // 2)
    return raw.view(numpy.uint32)[:count].reshape(shape)


def manual_seed(seed):
    """Seed the random generators of every device, those created later included."""
    _seeds.update(cpu=seed, gpu=seed)
    _generators.clear()


def get_rng_state():
    """The CPU generator's state, a JSON-serialisable dict (for checkpoints)."""
    return rng("cpu").bit_generator.state


def set_rng_state(state):
    rng("cpu").bit_generator.state = state


def reseed_gpu_rng():
    """For a checkpoint: CuPy cannot export its generator's state, so a GPU generator in
    use is replaced by a fresh one seeded from a draw of the old one, and that seed is
    returned for the checkpoint to keep. The saving run and every run resumed with
    ``set_gpu_rng_seed`` then draw the same GPU numbers."""
    if "gpu" in _generators:
        _seeds["gpu"] = int(_generators.pop("gpu").integers(0, 2**62))
    return _seeds["gpu"]


def set_gpu_rng_seed(seed):
    """The GPU generator starts anew from ``seed`` (see ``reseed_gpu_rng``)."""
    _seeds["gpu"] = seed
    _generators.pop("gpu", None)


def rng_fork(device=None):
    """Mark the point from which the next random draws on ``device`` can be replayed by
    ``rng_replay``: activation recomputation and blockwise attention redraw a dropout
    mask instead of storing it. The mark holds the CPU generator's state, so on the CPU
    the draws are exactly those of a run without replay. CuPy's generator state cannot
    be saved ("random states cannot be serialized"), so on the GPU the draws from here
    on come from a fresh generator seeded from the CPU one; the mark holds that seed."""
    device = check_device(device)
    seed = None
    if device == "gpu":
        seed = int(rng("cpu").integers(2 ** 63))
        _generators["gpu"] = xp("gpu").random.default_rng(seed)
    return rng("cpu").bit_generator.state, seed


@contextlib.contextmanager
def rng_replay(mark, device=None):
    """Within this block the generators draw again what they drew after ``rng_fork``
    returned ``mark`` (a fork inside the block repeats too); afterwards they go on from
    where they were."""
    device = check_device(device)
    state, seed = mark
    cpu = rng("cpu")
    saved_state, saved_gpu = cpu.bit_generator.state, rng("gpu") if device == "gpu" else None
    cpu.bit_generator.state = state
    if device == "gpu":
        _generators["gpu"] = xp("gpu").random.default_rng(seed)
    try:
        yield
    finally:
        cpu.bit_generator.state = saved_state
        if device == "gpu":
            _generators["gpu"] = saved_gpu
