"""Untrusted text shown in a terminal: control characters escaped, markup never interpreted."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from holdfast.display import console, escape_control, text


def test_escape_sequences_become_visible() -> None:
    hostile = "ok\x1b[2J\x1b]0;title\x07\x1b]52;c;ZXZpbA==\x07\rover\x08\x9b31m\u202eevil"
    shown = escape_control(hostile)
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown
    assert "\x9b" not in shown and "\u202e" not in shown and "\x08" not in shown
    assert shown.startswith("ok\\x1b[2J\\x1b]0;title\\x07")
    assert "\\u202eevil" in shown


def test_tabs_newlines_and_ordinary_text_are_kept() -> None:
    assert escape_control("a\tb\nc — café 漢字") == "a\tb\nc — café 漢字"


@given(st.text())
def test_no_control_character_survives(s: str) -> None:
    shown = escape_control(s)
    for ch in shown:
        code = ord(ch)
        assert ch in "\t\n" or not (code < 0x20 or 0x7F <= code <= 0x9F)


def test_console_prints_markup_as_text() -> None:
    buf = io.StringIO()
    out = console(file=buf, width=200)
    out.print(escape_control("answer [/i] and [red]E202[/red] :smile:"))
    out.print(text("[bold]not bold[/bold]\x1b[31m", style="bold"))
    printed = buf.getvalue()
    assert "answer [/i] and [red]E202[/red] :smile:" in printed
    assert "[bold]not bold[/bold]\\x1b[31m" in printed
    assert "\x1b" not in printed
