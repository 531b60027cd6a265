"""The host side of the box protocol: framing, size caps and the schema of what a box may send.

A frame is a 4-byte big-endian length and a UTF-8 JSON object. Everything that arrives from a box
is untrusted: :func:`check_box_message` accepts only the shapes below and raises
:class:`ProtocolViolation` for anything else, and :class:`FrameReader` refuses a length over the
cap before it buffers the body.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct(">I")


class ProtocolViolation(Exception):
    """A box sent something that is not a well-formed, expected message."""


def encode_frame(message: dict[str, Any], max_bytes: int) -> bytes:
    """One frame for ``message``; raises ValueError when it is not JSON or over the cap."""
    body = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    data = body.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise ValueError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    return HEADER.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into decoded messages, refusing frames over ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out: list[Any] = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > self.max_bytes:
                raise ProtocolViolation(f"frame of {size} bytes exceeds the {self.max_bytes} cap")
            if len(self._buf) < HEADER.size + size:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + size])
            del self._buf[: HEADER.size + size]
            try:
                out.append(json.loads(body.decode("utf-8", "surrogatepass")))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ProtocolViolation(f"frame is not JSON: {exc}") from None
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


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


def check_box_message(msg: Any) -> dict[str, Any]:
    """Validates one message from a box and returns it; raises ProtocolViolation otherwise."""
    if not isinstance(msg, dict):
        raise ProtocolViolation("a message must be a JSON object")
    op = msg.get("op")
    if op == "call":
        if set(msg) != {"op", "call", "name", "args", "kwargs"}:
            raise ProtocolViolation("call: unexpected or missing keys")
        if not _is_id(msg["call"]) or not isinstance(msg["name"], str):
            raise ProtocolViolation("call: bad id or name")
        if not isinstance(msg["args"], list) or not isinstance(msg["kwargs"], dict):
            raise ProtocolViolation("call: args must be a list and kwargs an object")
        return msg
    if op == "result":
        if not _is_id(msg.get("id")) or not isinstance(msg.get("ok"), bool):
            raise ProtocolViolation("result: bad id or ok flag")
        allowed = {
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
        if not set(msg) <= allowed:
            raise ProtocolViolation("result: unexpected keys")
        _check_error(msg.get("error"))
        for key in ("stdout", "stderr"):
            if key in msg and not isinstance(msg[key], str):
                raise ProtocolViolation(f"result: {key} must be a string")
        if "value_repr" in msg and not isinstance(msg["value_repr"], str | None):
            raise ProtocolViolation("result: value_repr must be a string")
        if "duration_s" in msg and not isinstance(msg["duration_s"], int | float):
            raise ProtocolViolation("result: duration_s must be a number")
        if "snapshot" in msg and not isinstance(msg["snapshot"], dict):
            raise ProtocolViolation("result: snapshot must be an object")
        return msg
    if op == "ready":
        if not isinstance(msg.get("ok"), bool):
            raise ProtocolViolation("ready: bad ok flag")
        return msg
    raise ProtocolViolation(f"unknown op {op!r}")
