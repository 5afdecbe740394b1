"""Read ``.safetensors`` weight files with NumPy alone.

The format (https://github.com/huggingface/safetensors) is deliberately dull, which is
what makes it safe: nothing in the file is ever executed, unlike a pickled checkpoint.

    8 bytes    N, the header length, an unsigned little-endian integer
    N bytes    a JSON object: {name: {"dtype": "F32", "shape": [2, 3],
                                      "data_offsets": [begin, end]}, ...}
               plus an optional "__metadata__": {str: str}
    the rest   the raw little-endian tensor bytes; offsets count from here

Every claim the header makes is checked against the file before any byte is read as a
tensor, so a corrupt or hostile file gives a ``SafetensorsError``, never a wrong array.
"""
import json
import math
import os

from .. import backend

# safetensors dtype name -> NumPy dtype of the stored bytes (little-endian).
_STORED = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_MAX_HEADER_BYTES = 100_000_000  # the limit the reference implementation enforces


class SafetensorsError(ValueError):
    """The file is not a valid safetensors file; the message says what is wrong."""


def read_safetensors(path):
    """Every tensor in the safetensors file at ``path``, as ``{name: host NumPy array}``.

    Integer, bool, float32 and float64 tensors keep their dtype. Half-precision floats
    (F16, BF16) are widened to float32: NumPy has no bfloat16, and the engine computes
    in float32 anyway. The file's ``__metadata__`` is ignored.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise SafetensorsError(f"{path}: truncated file: {size} bytes, expected at "
                                   "least 8 (the header length)")
        header_len = int.from_bytes(f.read(8), "little")
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise SafetensorsError(
                f"{path}: header length {header_len} does not fit: the file has "
                f"{size - 8} bytes after the length field (limit {_MAX_HEADER_BYTES})")
        header = _parse_header(path, f.read(header_len))
        data = bytearray(size - 8 - header_len)  # one writable buffer, shared by the views
        f.readinto(data)
    return {name: _tensor(path, name, entry, data) for name, entry in header.items()}


def _parse_header(path, raw):
    """The header's tensor entries, ``{name: entry}``, without ``__metadata__``."""
    def refuse_duplicates(pairs):
        names = [name for name, _ in pairs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SafetensorsError(f"{path}: header names {duplicates} more than once")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=refuse_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header must be a JSON object, got "
                               f"{type(header).__name__}")
    header.pop("__metadata__", None)
    return header


def _tensor(path, name, entry, data):
    """The array that header ``entry`` describes, after checking it against ``data``."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise SafetensorsError(f"{where}: entry must be an object with dtype, shape and "
                               f"data_offsets, got {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _STORED:
        raise SafetensorsError(f"{where}: unknown dtype {dtype!r}, expected one of "
                               f"{sorted(_STORED)}")
    if not (isinstance(shape, list) and all(_is_count(n) for n in shape)):
        raise SafetensorsError(f"{where}: shape must be a list of non-negative integers, "
                               f"got {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1] <= len(data)):
        raise SafetensorsError(f"{where}: data_offsets {offsets!r} are out of range: "
                               f"expected [begin, end] with 0 <= begin <= end <= {len(data)} "
                               "(the data section's size; is the file truncated?)")
    stored = backend.host.dtype(_STORED[dtype])
    count = math.prod(shape)
    if offsets[1] - offsets[0] != count * stored.itemsize:
        raise SafetensorsError(f"{where}: shape {shape} of {dtype} needs "
                               f"{count * stored.itemsize} bytes, but data_offsets span "
                               f"{offsets[1] - offsets[0]}")
    array = backend.host.frombuffer(data, stored, count, offsets[0]).reshape(shape)
    if dtype == "BF16":  # bfloat16 is the top half of a float32: shift it back into place
        return (array.astype("<u4") << 16).view("<f4")
    if dtype == "F16":
        return array.astype("<f4")
    return array


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
