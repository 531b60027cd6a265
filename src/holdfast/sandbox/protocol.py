"""The host side of the box protocol: framing, byte budgets, strict decoding, message schemas.

A frame is a 4-byte big-endian length and a UTF-8 JSON object. Everything that arrives from a box
is untrusted, and the host must stay healthy whatever it is:

* :class:`FrameReader` refuses a length over the cap before it buffers the body;
* :func:`decoded_cost` bounds, from the raw bytes and before anything is parsed, how much memory
  decoding a frame can take (JSON of millions of ``[]`` decodes to about twenty times its size), so
  the host can refuse a frame that would not fit the box's budget;
* :func:`nesting_depth_exceeds` refuses deep nesting before the recursive decoder sees it;
* :func:`decode_frame` parses strictly: no ``NaN`` or ``Infinity``, and any failure at all
  (``RecursionError`` and ``MemoryError`` included) is a :class:`ProtocolViolation`;
* :func:`check_box_message` accepts only the shapes below.
"""

from __future__ import annotations

import _json
import json
import re
import struct
from array import array
from itertools import accumulate
from typing import Any

HEADER = struct.Struct(">I")
DEFAULT_MAX_DEPTH = 100


class ProtocolViolation(Exception):
    """A box sent something that is not a well-formed, expected message."""


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode(message: Any) -> str:
    """``json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))``
    through the C encoder directly: ``json.dumps`` with options builds an encoder object per
    call, which is a good part of a small frame's cost. A fresh C encoder per call, as
    ``json.dumps`` makes, so that its circular-reference markers start empty."""
    encode = _json.make_encoder(
        {}, _not_json, _json.encode_basestring, None, ":", ",", False, False, False
    )
    return "".join(encode(message, 0))


def encode_frame(message: dict[str, Any], max_bytes: int) -> bytes:
    """One frame for ``message``; raises ValueError when it is not JSON or over the cap."""
    data = _encode(message).encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise ValueError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    return HEADER.pack(len(data)) + data


# Costs per token, measured with tracemalloc on CPython 3.11 against adversarial shapes (lists of
# empty lists or dicts, short strings, floats, dicts of many keys) and rounded up; the text itself
# costs its decoded copy plus the str objects (up to four bytes a character once one character is
# outside the BMP).
_COST_CONTAINER = 80
_COST_SEPARATOR = 48
_COST_KEY = 64
_COST_QUOTE = 32


# No byte of a frame costs more than this to decode (a bracket: its share of the text and one
# container), so a frame this many times its length under a budget needs no counting.
COST_PER_BYTE_MAX = 9 + _COST_CONTAINER


def decoded_cost(body: bytes) -> int:
    """An upper bound on the bytes ``json.loads(body)`` allocates, computed without parsing.

    Brackets and quotes inside strings are counted too, so the bound errs high, never low.
    """
    factor = 3 if body.isascii() and b"\\u" not in body else 9
    return (
        factor * len(body)
        + _COST_CONTAINER * (body.count(b"[") + body.count(b"{"))
        + _COST_SEPARATOR * body.count(b",")
        + _COST_KEY * body.count(b":")
        + _COST_QUOTE * body.count(b'"')
    )


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects deeper than ``limit`` (strings ignored)."""
    if len(body) <= limit or body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS).translate(_SIGNS)
    if len(brackets) <= limit:
        return False
    return max(accumulate(array("b", brackets)), default=0) > limit


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)
# The C scanner over the decoder's settings (what JSONDecoder.decode runs on, without its
# whitespace skipping): it clears its memo after each call and never releases the GIL.
_SCAN = _json.make_scanner(_DECODER)  # type: ignore[arg-type]


def decode_frame(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parses one frame body strictly; every failure is a :class:`ProtocolViolation`."""
    if nesting_depth_exceeds(body, max_depth):
        raise ProtocolViolation(f"frame nests deeper than {max_depth} levels")
    try:
        text = body.decode("utf-8", "surrogatepass")
        # The scanner itself, not JSONDecoder.decode: the box writes no whitespace outside
        # strings, so none is skipped, and anything after the one value is refused.
        value, end = _SCAN(text, 0)
    except StopIteration as exc:
        raise ProtocolViolation(f"frame is not strict JSON at character {exc.value}") from None
    except Exception as exc:  # RecursionError, MemoryError, ValueError, UnicodeDecodeError...
        raise ProtocolViolation(f"frame is not strict JSON: {type(exc).__name__}: {exc}") from None
    if end != len(text):
        raise ProtocolViolation(f"frame is not strict JSON: extra data at character {end}")
    return value


class FrameReader:
    """Splits a byte stream into frame bodies, refusing frames over ``max_bytes``."""

    def __init__(self, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self._buf = bytearray()

    def bodies(self, data: bytes) -> list[bytes]:
        """The complete frame bodies in the stream so far (the rest stays buffered)."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > self.max_bytes:
                raise ProtocolViolation(f"frame of {size} bytes exceeds the {self.max_bytes} cap")
            if end - pos - 4 < size:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out

    def feed(self, data: bytes) -> list[Any]:
        """The complete messages in the stream so far, strictly decoded."""
        return [decode_frame(body, self.max_depth) for body in self.bodies(data)]

    @property
    def pending(self) -> int:
        return len(self._buf)


# The box's proxies write a call's header first, so the host can refuse a call that is over budget
# (and tell the box why) without decoding it.
CALL_HEADER = re.compile(
    rb'\{"op":"call","call":(\d{1,15}),"name":"([A-Za-z_][A-Za-z0-9_]{0,99})",'
)

_ERROR_KEYS = {"type": str, "message": str, "traceback": str}


def _check_error(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or set(value) != set(_ERROR_KEYS):
        raise ProtocolViolation("malformed error object")
    for key, kind in _ERROR_KEYS.items():
        if not isinstance(value[key], kind):
            raise ProtocolViolation(f"error.{key} must be a string")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


_RESULT_KEYS = {
    "op",
    "id",
    "ok",
    "error",
    "value",
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
    "value_repr",
    "duration_s",
    "snapshot",
}
_CALL_KEYS = {"op", "call", "name", "args", "kwargs"}


def check_box_message(msg: Any) -> dict[str, Any]:
    """Validates one message from a box and returns it; raises ProtocolViolation otherwise."""
    if not isinstance(msg, dict):
        raise ProtocolViolation("a message must be a JSON object")
    op = msg.get("op")
    if op == "call":
        if msg.keys() != _CALL_KEYS:
            raise ProtocolViolation("call: unexpected or missing keys")
        if not _is_id(msg["call"]) or not isinstance(msg["name"], str):
            raise ProtocolViolation("call: bad id or name")
        if not isinstance(msg["args"], list) or not isinstance(msg["kwargs"], dict):
            raise ProtocolViolation("call: args must be a list and kwargs an object")
        return msg
    if op == "result":
        if not _is_id(msg.get("id")) or not isinstance(msg.get("ok"), bool):
            raise ProtocolViolation("result: bad id or ok flag")
        if not msg.keys() <= _RESULT_KEYS:
            raise ProtocolViolation("result: unexpected keys")
        _check_error(msg.get("error"))
        for key in ("stdout", "stderr"):
            if key in msg and not isinstance(msg[key], str):
                raise ProtocolViolation(f"result: {key} must be a string")
        for key in ("stdout_truncated", "stderr_truncated"):
            if key in msg and not isinstance(msg[key], bool):
                raise ProtocolViolation(f"result: {key} must be a boolean")
        if "value_repr" in msg and not isinstance(msg["value_repr"], str | None):
            raise ProtocolViolation("result: value_repr must be a string")
        if "duration_s" in msg and (
            not isinstance(msg["duration_s"], int | float) or isinstance(msg["duration_s"], bool)
        ):
            raise ProtocolViolation("result: duration_s must be a number")
        if "snapshot" in msg and not isinstance(msg["snapshot"], dict):
            raise ProtocolViolation("result: snapshot must be an object")
        return msg
    if op == "ready":
        if not isinstance(msg.get("ok"), bool):
            raise ProtocolViolation("ready: bad ok flag")
        return msg
    raise ProtocolViolation(f"unknown op {op!r}")
