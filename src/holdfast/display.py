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
  styled lines where the label is ours and the value is not.

HTML output escapes with its template engine's autoescape instead; JSON output is already safe
because the encoder escapes every control character below U+0020 (C1 controls are escaped here
before encoding where the text is shown in a terminal).
"""

from __future__ import annotations

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
