"""Showing untrusted text: what a model, a box or a user wrote is data, never markup or control.

Every command that prints text that came from outside the program (a model's reply, a cell's
output, a memory item, a task result, an error message quoting either) goes through this module:

* :func:`escape_control` makes every control character visible instead of letting the terminal act
  on it: ``ESC`` (cursor moves, screen clears, window titles, OSC 52 clipboard writes), C1 controls
  (``\\x9b`` is a one-byte CSI on many terminals), carriage returns and backspaces that overwrite
  what was printed, and the bidirectional overrides that make text read differently from its bytes.
  Newlines and tabs are kept.
* :func:`console` returns a Rich console that never interprets markup or emoji codes and never
  highlights, so ``[/i]`` or ``[red]E202[/red]`` in a reply prints as those characters and cannot
  raise ``MarkupError``.
* :func:`text` builds a Rich ``Text`` (which never parses markup) from untrusted text, for tables and
  styled lines where the label is ours and the value is not; :func:`styled` joins several, each
  with its own style, into one line.

* :func:`json_text` (and :func:`dumps`) makes JSON safe for a terminal: the encoder escapes
  every control character below U+0020 itself; C1 controls, DEL and the bidirectional controls
  are written as ``\\uXXXX`` escapes too, which decode to the very same string.

HTML output escapes with its template engine's autoescape instead.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# C0 controls except tab and newline, DEL, C1 controls, and the Unicode bidirectional controls
# (embeddings, overrides, isolates) plus the line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(value: object) -> str:
    """``str(value)`` with every control character shown as a ``\\xNN`` or ``\\uNNNN`` escape.

    Tabs and newlines are kept; everything a terminal could act on is not. The result is safe to
    write to a terminal and reads the same as the original for ordinary text.
    """
    s = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_visible, s)


def json_text(encoded: str) -> str:
    """JSON text with every character :func:`escape_control` would escape written as a JSON
    ``\\uXXXX`` escape: the same JSON value, safe to show in a terminal. (Such characters can
    only occur inside JSON strings, where the escape means the same character.)"""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, **kwargs)`` made safe for a terminal with :func:`json_text`."""
    return json_text(json.dumps(value, **kwargs))


def console(*, stderr: bool = False, **kwargs: Any) -> Console:
    """A Rich console for printing untrusted text: no markup, no emoji codes, no highlighting.

    Pass strings through :func:`escape_control` (or :func:`text`) before printing them; styled
    labels are built with ``rich.text.Text`` rather than markup strings.
    """
    from rich.console import Console

    kwargs.setdefault("highlight", False)
    return Console(stderr=stderr, markup=False, emoji=False, **kwargs)


def text(value: object, style: str = "") -> Text:
    """A Rich ``Text`` of untrusted ``value`` (control characters escaped, markup never parsed)."""
    from rich.text import Text

    return Text(escape_control(value), style=style)


def styled(*pieces: tuple[object, str] | object) -> Text:
    """One line built from ``(value, style)`` pairs and plain values, every value escaped: the
    way to style our own labels next to untrusted values without markup."""
    from rich.text import Text

    out = Text()
    for piece in pieces:
        value, style = piece if isinstance(piece, tuple) else (piece, "")
        out.append_text(text(value, style))
    return out
