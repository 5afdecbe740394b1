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
import reprlib

from .. import backend

# safetensors dtype name -> NumPy dtype of the stored bytes (little-endian).
_STORED = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_MAX_HEADER_BYTES = 100_000_000  # the limit the reference implementation enforces
_MAX_RANK = 64                     # NumPy's limit on an array's number of dimensions
_short = reprlib.repr  # a bounded repr (a few levels, a few items): a header can be huge


class SafetensorsError(ValueError):
    """The file is not a valid safetensors file; the message says what is wrong."""


def read_safetensors(path):
    """Every tensor in the safetensors file at ``path``, as ``{name: host NumPy array}``.

    Integer, bool, float32 and float64 tensors keep their dtype. Half-precision floats
    (F16, BF16) are widened to float32: NumPy has no bfloat16, and the engine computes
    in float32 anyway. The file's ``__metadata__`` is ignored.

    The whole header is checked (``_checked_entry``, ``_check_layout``) before any tensor
    is read, each into its own array: memory never exceeds the file's real size.
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
        entries = _parse_header(path, f.read(header_len), size - 8 - header_len)
        return {name: _read_tensor(f, 8 + header_len, entry) for name, entry in entries}


def _parse_header(path, raw, data_size):
    """The header's tensors as ``[(name, (dtype, shape, begin, end))]``, each entry
    checked, and their layout checked against the ``data_size`` bytes of the data."""
    def refuse_duplicates(pairs):  # called for every JSON object; a set keeps it linear
        names = set()
        for name, _ in pairs:
            if name in names:
                raise SafetensorsError(f"{path}: header names {_short(name)} more than once")
            names.add(name)
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=refuse_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON ({exc})") from None
    except RecursionError:  # Python's JSON parser recurses once per nesting level
        raise SafetensorsError(f"{path}: header is nested too deeply; a safetensors "
                               "header is {name: {dtype, shape, data_offsets}}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header must be a JSON object, got "
                               f"{type(header).__name__}")
    header.pop("__metadata__", None)
    entries = [(name, _checked_entry(f"{path}: tensor {_short(name)}", entry))
               for name, entry in header.items()]
    _check_layout(path, entries, data_size)
    return entries


def _checked_entry(where, entry):
    """``(dtype name, shape, begin, end)`` of one header entry, or an error."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise SafetensorsError(f"{where}: entry must be an object with dtype, shape and "
                               f"data_offsets, got {_short(entry)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _STORED:
        raise SafetensorsError(f"{where}: unknown dtype {_short(dtype)}, expected one of "
                               f"{sorted(_STORED)}")
    if not (isinstance(shape, list) and len(shape) <= _MAX_RANK
            and all(_is_count(n) for n in shape)):
        raise SafetensorsError(f"{where}: shape must be a list of at most {_MAX_RANK} "
                               f"non-negative integers, got {_short(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{where}: data_offsets must be [begin, end] with "
                               f"0 <= begin <= end, got {_short(offsets)}")
    stored = backend.host.dtype(_STORED[dtype])
    if math.prod(max(n, 1) for n in shape) * stored.itemsize >= 2 ** 63:
        raise SafetensorsError(f"{where}: shape {_short(shape)} is too large for any array "
                               "(NumPy arrays hold fewer than 2**63 bytes)")
    needed = math.prod(shape) * stored.itemsize
    if offsets[1] - offsets[0] != needed:
        raise SafetensorsError(f"{where}: shape {shape} of {dtype} needs {needed} bytes, "
                               f"but data_offsets span {offsets[1] - offsets[0]}")
    return dtype, shape, offsets[0], offsets[1]


def _check_layout(path, entries, data_size):
    """The tensors must tile the data section: sorted by offset, each begins where the
    previous one ended, the first at 0 and the last at its end. Overlapping tensors would
    alias each other's bytes; gaps and trailing bytes are data no tensor explains."""
    end = 0
    for name, (_, _, begin, stop) in sorted(entries, key=lambda e: (e[1][2], e[1][3])):
        if begin != end:
            what = "overlaps the tensor before it" if begin < end else "leaves a gap"
            raise SafetensorsError(
                f"{path}: tensor {_short(name)} begins at byte {begin} of the data but the "
                f"previous tensor ends at {end}: it {what}; tensors must be stored back to back")
        end = stop
    if end != data_size:
        why = "trailing bytes" if end < data_size else "is the file truncated?"
        raise SafetensorsError(f"{path}: the tensors end at byte {end} of the data, but the "
                               f"data section has {data_size} bytes ({why})")


def _read_tensor(f, data_start, entry):
    """The array of one checked entry, read from the open file ``f``."""
    dtype, shape, begin, end = entry
    buffer = bytearray(end - begin)  # writable, and this tensor's own
    f.seek(data_start + begin)
    if f.readinto(buffer) != len(buffer):
        raise SafetensorsError(f"{f.name}: the file shrank while it was being read")
    array = backend.host.frombuffer(buffer, _STORED[dtype]).reshape(shape)
    if dtype == "BF16":  # bfloat16 is the top half of a float32: shift it back into place
        return (array.astype("<u4") << 16).view("<f4")
    if dtype == "F16":
        return array.astype("<f4")
    return array


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
