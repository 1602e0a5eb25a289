"""The encoding of values between the grader and the sandboxed worker.

Only plain data crosses: ``None``, ``bool``, ``int``, ``float``, ``str``, lists, tuples and
string-keyed dicts of those (a subclass, such as a namedtuple, as its plain value), NumPy
arrays of numbers or booleans (as ``.npy`` bytes, read back with ``allow_pickle=False``),
PyTorch tensors (sent as such arrays), and references to objects that stay in the worker
(``{"__ref__": id}``). Decoding is strict and bounded: an unknown tag, an object array,
too deep a nesting or too many bytes is an error, never something to guess about.

:func:`loads` is the boundary for text: every string of a received message (dict keys
included) comes out encodable as UTF-8. JSON may carry lone surrogates (``"\\udce9"``, as
text decoded with ``errors="surrogateescape"`` holds); each becomes U+FFFD, so nothing
downstream (SQLite, feedback files, the terminal) can fail on a student's text.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys

import numpy as np

MAX_DEPTH = 32
MAX_MESSAGE_BYTES = 64 << 20  # one message, encoded
MAX_STRING_CHARS = 100_000
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's \\u escapes let them through; UTF-8 cannot hold them


class WireError(ValueError):
    """A value that may not cross the sandbox boundary, or a malformed message."""


def _array_bytes(array: np.ndarray) -> str:
    if array.dtype.kind not in "biufc":
        raise WireError(f"arrays of dtype {array.dtype} cannot be sent (numbers and booleans only)")
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, order="C"), allow_pickle=False)  # keeps 0-d scalars 0-d
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode(value, *, make_ref=None, depth: int = 0):
    """Turn ``value`` into JSON-compatible data; ``make_ref(obj) -> int`` handles other objects.

    Subclasses of the plain types (a namedtuple, an ``OrderedDict``, an ``IntEnum``, a ``float``
    subclass) are sent as their plain values, read through the base type's own methods, so
    what a subclass overrides never shapes what crosses.
    """
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if value is None or type(value) is bool:
        return value
    if isinstance(value, str):
        value = str.__str__(value)
        if len(value) > MAX_STRING_CHARS:
            raise WireError(f"string of {len(value):,} characters is too long")
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biufc":
        return {"__ndarray__": _array_bytes(np.asarray(value)), "scalar": True}
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return {"__float__": float.__repr__(value)}  # keeps nan and inf, which JSON lacks
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _array_bytes(value)}
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return {"__tensor__": _array_bytes(torch.Tensor.numpy(value.detach().cpu()))}
    if isinstance(value, (list, tuple)):
        items = [encode(v, make_ref=make_ref, depth=depth + 1)
                 for v in (tuple.__iter__(value) if isinstance(value, tuple) else list.__iter__(value))]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        pairs = list(dict.items(value))
        if not all(isinstance(k, str) for k, _ in pairs):
            raise WireError("only dicts with string keys can be sent")
        return {"__dict__": {str.__str__(k): encode(v, make_ref=make_ref, depth=depth + 1) for k, v in pairs}}
    if make_ref is not None:
        return {"__ref__": make_ref(value)}
    raise WireError(f"a value of type {type(value).__name__} cannot be sent")


def _array(text: str) -> np.ndarray:
    if not isinstance(text, str):
        raise WireError("malformed array")
    try:
        array = np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
    except Exception as err:  # numpy raises several kinds for malformed bytes
        raise WireError(f"malformed array ({type(err).__name__})") from None
    if array.dtype.kind not in "biufc":
        raise WireError(f"arrays of dtype {array.dtype} are not accepted")
    return array


def decode(data, *, resolve_ref=None, make_tensor=None, depth: int = 0):
    """Inverse of :func:`encode`. ``resolve_ref(id)`` and ``make_tensor(array)`` are the caller's."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if data is None or type(data) in (bool, int, str):
        return data
    if type(data) is list:
        return [decode(v, resolve_ref=resolve_ref, make_tensor=make_tensor, depth=depth + 1) for v in data]
    if type(data) is not dict or len(data) not in (1, 2):
        raise WireError("malformed value")
    if "__float__" in data:
        try:
            return float(data["__float__"])
        except (TypeError, ValueError):
            raise WireError("malformed float") from None
    if "__ndarray__" in data:
        array = _array(data["__ndarray__"])
        return array[()] if data.get("scalar") is True else array
    if "__tensor__" in data:
        array = _array(data["__tensor__"])
        return make_tensor(array) if make_tensor is not None else array
    if "__tuple__" in data and type(data["__tuple__"]) is list:
        return tuple(decode(v, resolve_ref=resolve_ref, make_tensor=make_tensor, depth=depth + 1)
                     for v in data["__tuple__"])
    if "__dict__" in data and type(data["__dict__"]) is dict:
        return {str(k): decode(v, resolve_ref=resolve_ref, make_tensor=make_tensor, depth=depth + 1)
                for k, v in data["__dict__"].items()}
    if "__ref__" in data and type(data["__ref__"]) is int and resolve_ref is not None:
        return resolve_ref(data["__ref__"])
    raise WireError("malformed value")


def dumps(message: dict) -> bytes:
    line = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    if len(line) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(line):,} bytes exceeds the {MAX_MESSAGE_BYTES:,}-byte limit")
    return line


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (the replacement character)."""
    return text if text.isascii() else LONE_SURROGATE.sub("\ufffd", text)


def _cleaned(message: dict) -> dict:
    """Every string of a decoded JSON message made encodable, in place (iterative: no recursion)."""
    stack = [message]
    while stack:
        container = stack.pop()
        if type(container) is list:
            for i, item in enumerate(container):
                if type(item) is str:
                    container[i] = clean_text(item)
                elif type(item) in (list, dict):
                    stack.append(item)
            continue
        for key in list(container):
            item = container.pop(key) if clean_text(key) != key else container[key]
            if type(item) is str:
                item = clean_text(item)
            elif type(item) in (list, dict):
                stack.append(item)
            container[clean_text(key)] = item
    return message


def loads(line: bytes) -> dict:
    if len(line) > MAX_MESSAGE_BYTES:
        raise WireError("message too large")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError("malformed message") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise WireError("nested too deeply") from None
    if type(message) is not dict:
        raise WireError("malformed message")
    return _cleaned(message)
