"""Checkpoints: a model, its optimizer and the run's state in one ``.npz`` file.

The file is a plain NumPy archive that ``numpy.load(path, allow_pickle=False)`` opens
anywhere, with nothing executable inside (pickle can run code on load, so it is never
used):

    model/<parameter name>         each parameter, e.g. ``model/blocks.0.self_attn.w_q.weight``
    optim/<index>/<state name>     each optimizer state array, e.g. ``optim/3/exp_avg``
    meta                           UTF-8 JSON as a uint8 array: step, config, extra, the
                                   model's own config, optimizer options and step counts,
                                   a float16 run's loss scaler (``precision.LossScaler``),
                                   the CPU random generator's state and the GPU one's
                                   seed (see ``backend.reseed_gpu_rng``), so dropout
                                   and sampling continue identically on either device

It is written to a hidden temporary file next to ``path`` and then renamed over it, so
a crash mid-save leaves the previous checkpoint intact.

Loading treats the file as untrusted and works in two stages. First it checks: the
metadata, then every entry's name, dtype and shape from the zip directory and the
.npy headers, against the model, the optimizer and the saved config, before any array
data is read (so memory is bounded by the model's size, whatever the file claims).
Only then does it read and assign, so a refused checkpoint changes nothing.
"""
import contextlib
import copy
import dataclasses
import json
import math
import os
import reprlib
import secrets
import zipfile

from . import backend

FORMAT = "minitransformer-checkpoint"
VERSION = 1
_MAX_META_BYTES = 100_000_000  # the JSON metadata: a vocabulary in ``extra`` fits easily


def save_checkpoint(path, model, optimizer=None, step=0, config=None, extra=None,
                    loss_scaler=None):
    """Save ``model`` (and ``optimizer``, and a float16 run's ``loss_scaler``) to
    ``path``, with the step reached, a ``config`` (a dataclass or a dict) and ``extra``
    (anything JSON can hold, e.g. a vocabulary).
    The model's own ``model.config`` dataclass, if it has one, is saved too, so that
    ``load_checkpoint`` can refuse a model built differently."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "step": int(step), "config": config,
            "extra": extra, "model_config": _model_config(model),
            "rng_state": backend.get_rng_state(), "gpu_rng_seed": backend.reseed_gpu_rng(),
            "optimizer": None,
            "loss_scaler": None if loss_scaler is None else loss_scaler.state_dict()}
    if optimizer is not None:
        meta["optimizer"] = _split_optimizer_state(optimizer, arrays)
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_checkpoint: config and extra must be JSON-serialisable "
                        f"(dicts, lists, strings, numbers, None): {exc}") from None
    arrays["meta"] = backend.host.frombuffer(text.encode("utf-8"), dtype=backend.host.uint8)
    _write_atomically(path, arrays)


def _write_atomically(path, arrays):
    """Write to a hidden ``.<name>.<random>.tmp`` beside ``path``, then rename it over
    ``path``. The file is created with mode 0o666 less the umask, as ``open`` would (a
    ``tempfile`` is always 0o600); on any exception, Ctrl-C included, it is removed."""
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # Windows
    handle = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            backend.host.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load_checkpoint(path, model, optimizer=None, strict_config=True, loss_scaler=None):
    """Load a checkpoint written by ``save_checkpoint`` into ``model`` (and ``optimizer``,
    and ``loss_scaler``), restore the random generators, and return ``{"step", "config",
    "extra"}`` (``config`` as a dict: rebuild a dataclass with
    ``Config(**checkpoint["config"])``).

    A checkpoint saved from a model whose ``model.config`` differs from this one's (say
    num_heads=2 against 4: the shapes agree while the function differs) is refused
    unless ``strict_config=False``. Everything is checked before anything is assigned."""
    with _unreadable(path):
        archive = zipfile.ZipFile(path)
    with archive:
        with _unreadable(path):
            meta, headers = _read_directory(archive)
        if strict_config:
            _check_config(path, meta.get("model_config"), _model_config(model))
        expected = {f"model/{name}": p.shape for name, p in model.named_parameters()}
        _check_model_entries(path, headers, expected)
        if optimizer is not None:
            expected.update(_optimizer_entries(path, meta["optimizer"], headers, optimizer))
        if loss_scaler is not None:
            _check_loss_scaler(path, meta.get("loss_scaler"), loss_scaler)
        with _unreadable(path):
            arrays = {name: _read_array(archive, name) for name in expected}
    if optimizer is not None:  # first: its load_state_dict checks all before changing any
        try:
            optimizer.load_state_dict(_optimizer_state(arrays, meta["optimizer"]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"load_checkpoint {path}: {exc}") from None
    model.load_state_dict({key[len("model/"):]: value for key, value in arrays.items()
                           if key.startswith("model/")})
    if loss_scaler is not None:
        loss_scaler.load_state_dict(meta["loss_scaler"])
    backend.set_rng_state(meta["rng_state"])
    if meta.get("gpu_rng_seed") is not None:  # absent from older checkpoints
        backend.set_gpu_rng_seed(meta["gpu_rng_seed"])
    return {"step": meta["step"], "config": meta["config"], "extra": meta["extra"]}


# ---- stage one: the file's own structure ---------------------------------------------
class _NewerVersion(ValueError):
    """A readable checkpoint, but from a newer minitransformer."""


@contextlib.contextmanager
def _unreadable(path):
    """Whatever goes wrong while reading the file's structure becomes one error."""
    try:
        yield
    except FileNotFoundError:
        raise
    except _NewerVersion as exc:
        raise _NewerVersion(f"load_checkpoint: {path} {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, TypeError, KeyError,
            IndexError, OverflowError, RecursionError) as exc:
        raise ValueError(f"load_checkpoint: {path} is not a readable minitransformer "
                         f"checkpoint ({type(exc).__name__}: {exc}); only files written "
                         "by save_checkpoint can be loaded") from None


def _read_directory(archive):
    """The checked metadata and ``{entry name: (shape, dtype)}`` of every array, from the
    zip directory and the .npy headers alone: no array data is read."""
    headers = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        _require(info.filename.endswith(".npy") and name not in headers,
                 "entry name", "a unique '<name>.npy'", info.filename)
        headers[name] = _npy_header(archive, info)
    _require("meta" in headers, "the archive", "a checkpoint, with a 'meta' entry",
             sorted(headers))
    shape, dtype = headers.pop("meta")
    _require(dtype == backend.host.uint8 and len(shape) == 1 and shape[0] <= _MAX_META_BYTES,
             "meta", f"a uint8 vector of at most {_MAX_META_BYTES} bytes", (shape, dtype))
    meta = json.loads(_read_array(archive, "meta").tobytes().decode("utf-8"))
    _check_meta(meta)
    return meta, headers


def _npy_header(archive, info):
    """``(shape, dtype)`` from an entry's .npy header, checked against the entry's size in
    the zip directory; only the header's few bytes are decompressed."""
    fmt = backend.host.lib.format
    with archive.open(info) as f:
        version = fmt.read_magic(f)
        _require(version in ((1, 0), (2, 0)), f"{info.filename} .npy version", "1.0 or 2.0",
                 version)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, _, dtype = read_header(f)
        _require(not dtype.hasobject, f"{info.filename} dtype", "plain numbers", dtype)
        nbytes = f.tell() + math.prod(shape) * dtype.itemsize
    _require(nbytes == info.file_size, f"{info.filename} size",
             f"{nbytes} bytes (as its .npy header says)", info.file_size)
    return shape, dtype


def _read_array(archive, name):
    with archive.open(name + ".npy") as f:
        return backend.host.lib.format.read_array(f, allow_pickle=False)


def _check_meta(meta):
    """Refuse metadata that ``save_checkpoint`` cannot have written, naming the field."""
    _require(isinstance(meta, dict), "meta", "a JSON object", meta)
    _require(meta.get("format") == FORMAT, "format", repr(FORMAT), meta.get("format"))
    version = meta.get("version")
    _require(_is_int(version) and version >= 1, "version", "a positive integer", version)
    if version > VERSION:
        raise _NewerVersion(f"has format version {version}, newer than this "
                            f"minitransformer's {VERSION}; upgrade minitransformer")
    for key in ("step", "config", "extra", "rng_state", "optimizer"):
        _require(key in meta, f"meta[{key!r}]", "present", sorted(meta))
    _require(_is_int(meta["step"]), "step", "an integer", meta["step"])
    _require(meta.get("model_config") is None or isinstance(meta["model_config"], dict),
             "model_config", "an object or null", meta.get("model_config"))
    _check_rng_state(meta["rng_state"])
    seed = meta.get("gpu_rng_seed")
    _require(seed is None or _is_int(seed) and 0 <= seed < 2**63, "gpu_rng_seed",
             "null or an integer in [0, 2**63)", seed)
    saved = meta["optimizer"]
    if saved is None:
        return
    _require(isinstance(saved, dict) and isinstance(saved.get("type"), str),
             "optimizer", "an object with a 'type' name", saved)
    groups, state = saved.get("param_groups"), saved.get("state")
    _require(isinstance(groups, list) and all(
        isinstance(g, dict) and isinstance(g.get("params"), list)
        and all(_is_int(i) for i in g["params"]) for g in groups),
        "optimizer param_groups", "a list of {'params': [index, ...], option: value}", groups)
    _require(isinstance(state, dict) and all(
        _is_index(i) and isinstance(s, dict) and all(_is_number(v) for v in s.values())
        for i, s in state.items()),
        "optimizer state", "{index: {name: number}}", state)


def _check_rng_state(state):
    """Setting a malformed state raises; try it on a scratch generator of the same kind,
    so that the real one is only set once everything else has been checked."""
    _require(isinstance(state, dict), "rng_state", "an object", state)
    scratch = type(backend.rng("cpu").bit_generator)()
    try:
        scratch.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"rng_state must be the state of a {type(scratch).__name__} "
                         f"generator ({type(exc).__name__}: {exc})") from None


# ---- stage two: does it fit this model and optimizer? ---------------------------------
def _check_config(path, saved, own):
    """Refuse a checkpoint from a model configured differently, listing the settings that
    differ. Settings only one side has (added in a later version) are not compared."""
    if saved is None or own is None:
        return
    differ = [key for key in saved if key in own and saved[key] != own[key]]
    if differ:
        theirs = ", ".join(f"{key}={saved[key]!r}" for key in differ)
        ours = ", ".join(f"{key}={own[key]!r}" for key in differ)
        raise ValueError(f"load_checkpoint {path}: the checkpoint's model has {theirs}, but "
                         f"this model has {ours}; build the model with the checkpoint's "
                         "settings, or pass strict_config=False to load the weights anyway")


def _check_model_entries(path, headers, expected):
    saved = {name: shape for name, (shape, dtype) in headers.items()
             if name.startswith("model/")}
    problems = [f"missing {name[6:]!r}" for name in expected if name not in saved]
    problems += [f"unexpected {name[6:]!r}" for name in saved if name not in expected]
    problems += [f"{name[6:]!r} has shape {saved[name]} in the checkpoint but "
                 f"{expected[name]} in the model" for name in expected
                 if name in saved and saved[name] != expected[name]]
    problems += [f"{name[6:]!r} has dtype {headers[name][1]}, expected floating point"
                 for name in saved if headers[name][1].kind != "f"]
    others = [name for name in headers if not name.startswith(("model/", "optim/"))]
    problems += [f"unknown entry {name!r}" for name in others]
    if problems:
        raise ValueError(f"load_checkpoint {path}: the checkpoint does not match the "
                         "model's parameters: " + "; ".join(problems))


def _optimizer_entries(path, saved, headers, optimizer):
    """``{entry name: shape}`` of the optimizer's arrays, each checked against its
    parameter; a clear error if the checkpoint holds no, or another, optimizer."""
    name = type(optimizer).__name__
    if saved is None:
        raise ValueError(f"load_checkpoint {path}: the checkpoint has no optimizer state; "
                         "pass optimizer=None, or save one with save_checkpoint(optimizer=...)")
    if saved["type"] != name:
        raise ValueError(f"load_checkpoint {path}: the checkpoint holds {saved['type']} "
                         f"state, which cannot be loaded into {name}; pass a "
                         f"{saved['type']}, or optimizer=None to load the model alone")
    params = optimizer.params()
    entries = {}
    for entry, (shape, dtype) in headers.items():
        if not entry.startswith("optim/"):
            continue
        index, _, key = entry[len("optim/"):].partition("/")
        ok = _is_index(index) and int(index) < len(params) and index in saved["state"]
        if not (ok and key and shape == params[int(index)].shape and dtype.kind == "f"):
            raise ValueError(f"load_checkpoint {path}: entry {entry!r} ({dtype} {shape}) "
                             f"does not fit {name}'s {len(params)} parameters; expected "
                             "optim/<index>/<name> of its parameter's shape")
        entries[entry] = shape
    return entries


def _check_loss_scaler(path, saved, loss_scaler):
    """Try the saved state on a copy of ``loss_scaler``, which it must fit."""
    if saved is None:
        raise ValueError(f"load_checkpoint {path}: the checkpoint has no loss scaler state; pass "
                         "loss_scaler=None, or save one with save_checkpoint(loss_scaler=...)")
    try:
        copy.copy(loss_scaler).load_state_dict(saved)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"load_checkpoint {path}: {exc}") from None


def _optimizer_state(arrays, saved):
    """Reassemble ``optimizer.state_dict()``'s layout from the archive."""
    state = {int(index): dict(scalars) for index, scalars in saved["state"].items()}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, index, entry = key.split("/", 2)
            state[int(index)][entry] = value
    return {"param_groups": saved["param_groups"], "state": state}


# ---- helpers --------------------------------------------------------------------------
def _model_config(model):
    """``model.config`` as it reads back from JSON (tuples become lists), or None."""
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return None
    return json.loads(json.dumps(dataclasses.asdict(config), default=repr))


def _split_optimizer_state(optimizer, arrays):
    """``optimizer.state_dict()`` with its arrays moved into ``arrays`` (as
    ``optim/<index>/<name>``), leaving what JSON can hold: options and step counts."""
    state = optimizer.state_dict()
    scalars = {}
    for index, entries in state["state"].items():
        scalars[str(index)] = {}
        for name, value in entries.items():
            if backend.is_array(value):
                arrays[f"optim/{index}/{name}"] = value
            else:
                scalars[str(index)][name] = value
    return {"type": type(optimizer).__name__, "param_groups": state["param_groups"],
            "state": scalars}


def _require(ok, what, expected, got):
    if not ok:
        raise ValueError(f"{what} must be {expected}, got {reprlib.repr(got)}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_index(text):
    return isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 10
