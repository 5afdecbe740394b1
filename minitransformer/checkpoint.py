"""Checkpoints: a model, its optimizer and the run's state in one ``.npz`` file.

The file is a plain NumPy archive that ``numpy.load(path, allow_pickle=False)`` opens
anywhere, with nothing executable inside (pickle can run code on load, so it is never
used):

    model/<parameter name>         each parameter, e.g. ``model/blocks.0.attn.q.weight``
    optim/<index>/<state name>     each optimizer state array, e.g. ``optim/3/exp_avg``
    meta                           UTF-8 JSON as a uint8 array: step, config, extra,
                                   optimizer options and step counts, and the CPU random
                                   generator's state, so dropout continues identically

It is written to a temporary file in the same directory and then renamed over
``path``, so a crash mid-save leaves the previous checkpoint intact.
"""
import dataclasses
import json
import os
import tempfile
import zipfile

from . import backend

FORMAT = "minitransformer-checkpoint"
VERSION = 1


def save_checkpoint(path, model, optimizer=None, step=0, config=None, extra=None):
    """Save ``model`` (and ``optimizer``) to ``path``, with the step reached, a ``config``
    (a dataclass or a dict) and ``extra`` (anything JSON can hold, e.g. a vocabulary)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "step": int(step), "config": config,
            "extra": extra, "rng_state": backend.get_rng_state(), "optimizer": None}
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
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            backend.host.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load_checkpoint(path, model, optimizer=None):
    """Load a checkpoint written by ``save_checkpoint`` into ``model`` (and ``optimizer``),
    restore the CPU random generator, and return ``{"step", "config", "extra"}``
    (``config`` as a dict: rebuild a dataclass with ``Config(**checkpoint["config"])``)."""
    arrays, meta = _read(path)
    model_state = {key[len("model/"):]: value for key, value in arrays.items()
                   if key.startswith("model/")}
    try:
        model.load_state_dict(model_state)
    except ValueError as exc:
        raise ValueError(f"load_checkpoint {path}: {exc}") from None
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state(path, arrays, meta, optimizer))
    backend.set_rng_state(meta["rng_state"])
    return {"step": meta["step"], "config": meta["config"], "extra": meta["extra"]}


def _read(path):
    """All arrays and the metadata of a checkpoint file; a clear error if it is not one."""
    try:
        with backend.host.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"its format is {meta.get('format')!r}, expected {FORMAT!r}")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError, EOFError,
            zipfile.BadZipFile) as exc:
        raise ValueError(f"load_checkpoint: {path} is not a readable minitransformer "
                         f"checkpoint ({type(exc).__name__}: {exc})") from None
    if meta["version"] > VERSION:
        raise ValueError(f"load_checkpoint: {path} has format version {meta['version']}, "
                         f"newer than this minitransformer's {VERSION}; upgrade it")
    return arrays, meta


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


def _optimizer_state(path, arrays, meta, optimizer):
    """Reassemble ``optimizer.state_dict()``'s layout from the archive."""
    saved = meta["optimizer"]
    name = type(optimizer).__name__
    if saved is None:
        raise ValueError(f"load_checkpoint {path}: the checkpoint has no optimizer state; "
                         "pass optimizer=None, or save one with save_checkpoint(optimizer=...)")
    if saved["type"] != name:
        raise ValueError(f"load_checkpoint {path}: the checkpoint holds {saved['type']} "
                         f"state, which cannot be loaded into {name}")
    state = {int(index): dict(scalars) for index, scalars in saved["state"].items()}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, index, entry = key.split("/", 2)
            state.setdefault(int(index), {})[entry] = value
    return {"param_groups": saved["param_groups"], "state": state}
