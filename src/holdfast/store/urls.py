"""Database URLs: which backend a URL names, and how to show one without its password.

A PostgreSQL URL may carry a password in its user part (``postgresql://u:secret@host/db``), in a
query parameter (``?password=secret``) or, as a libpq keyword string, in ``password=secret``.
:func:`redact` prints a URL with none of them, and never raises, however malformed the URL is
(``postgresql://u:secret@[::1/db`` included); :func:`scrub` removes every form of every password
a URL holds (as written and percent-decoded) from any text, such as a driver's error message,
which may quote the whole URL.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"
MASK = "***"

_KEYWORD_PASSWORD = re.compile(r"(?:^|[\s?&;])password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&;]*)", re.I)
# in a libpq keyword string an unquoted value runs to the next space: "password=;x" is ";x"
_KEYWORD_STRING_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", re.I)


def is_postgres(url: str) -> bool:
    return url.strip().lower().startswith(POSTGRES_SCHEMES)


def _secrets(url: str) -> list[str]:
    """Every password the text ``url`` may hold, longest first, raw and percent-decoded."""
    found: list[str] = []
    _, sep, rest = url.partition("://")
    if sep:
        authority = rest.split("/", 1)[0].split("?", 1)[0]
        at = rest.rfind("@")
        if at >= 0:
            _, colon, password = rest[:at].partition(":")
            if colon:
                found.append(password)
        elif ":" in authority and not (authority.startswith("[") and authority.endswith("]")):
            # "user:password" with the "@host" left out: libpq reads it as a host and a port, so
            # a "port" that is not a number may be a password, and so may what follows it (a
            # password can hold "/", "?" or "#"): all of it, and each piece, is withheld
            tail = rest.partition(":")[2]
            port = re.split(r"[/?#]", tail, maxsplit=1)[0]
            if not port.isdigit():
                found.append(tail)
                found.extend(piece for piece in re.split(r"[/?#]", tail) if piece)
        query = rest.partition("?")[2]
        for pair in query.split("&"):
            key, eq, value = pair.partition("=")
            if eq and unquote(key).strip().lower() == "password":
                found.append(value)
    for m in [*_KEYWORD_PASSWORD.finditer(url), *_KEYWORD_STRING_PASSWORD.finditer(url)]:
        value = m.group(1)
        found.append(value)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            found.append(value[1:-1])
    out: set[str] = set()
    for s in found:
        for form in (s, unquote(s), unquote(s.replace("+", " "))):
            if form:
                out.add(form)
    return sorted(out, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with every password of ``url`` replaced by ``***``.

    Should a password still show after that (it was made of the mask's own characters), the
    whole text is withheld rather than shown.
    """
    secrets = _secrets(url)
    for secret in secrets:
        text = text.replace(secret, MASK)
    if any(secret in text for secret in secrets):
        return "(withheld: the text would show a password)"
    return text


def redact(url: str) -> str:
    """``url`` for messages and logs: scheme, user, host, port and database, no password."""
    text = url.strip()
    if not is_postgres(text):
        if "=" in text and "://" not in text:
            return scrub(_redact_keywords(text), url)
        return scrub(text, url)
    rest = text.partition("://")[2]
    at = rest.rfind("@")
    userinfo, hostpart = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    user = userinfo.partition(":")[0]
    hostport, _, path = hostpart.partition("/")
    bracketed = hostport.startswith("[") and hostport.endswith("]")  # a bare IPv6 address
    if at < 0 and ":" in hostport and not bracketed:
        host_only, port = hostport.rsplit(":", 1)
        if not port.isdigit():
            hostport = f"{host_only}:{MASK}"
    if "?" in hostport:
        hostport, _, query = hostport.partition("?")
        path = "?" + query
    dbname, _, query = path.partition("?")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    host = hostport or params.get("host", "")
    shown = f"postgresql://{user}{'@' if user else ''}{host}/{dbname}"
    if hostport and params.get("host"):
        shown += f"?host={params['host']}"
    elif not hostport and params.get("host"):
        shown = f"postgresql://{user}{'@' if user else ''}/{dbname}?host={params['host']}"
    return scrub(shown, url)


def _redact_keywords(text: str) -> str:
    """A libpq keyword string (``host=h dbname=d password=p``) without its password."""
    return _KEYWORD_STRING_PASSWORD.sub(
        lambda m: m.group(0)[: m.start(1) - m.start(0)] + MASK, text
    )


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (``sqlite:////path`` too), or ``url`` itself when
    it is a plain path."""
    if not url.startswith(SQLITE_SCHEME):
        return url
    return "/" + url[len(SQLITE_SCHEME) :].lstrip("/")
