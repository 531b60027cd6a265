"""Database URLs are shown without their password, in every form, however malformed."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from holdfast.store.urls import redact, scrub, sqlite_path

_any = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=24,
)
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)

TEMPLATES = (
    "postgresql://{user}:{pw}@{host}:5432/{db}",
    "postgres://{user}:{pw}@{host}/{db}?sslmode=require",
    "postgresql://{user}:{pw}@[{host}/{db}",  # an unclosed IPv6 bracket
    "postgresql://{user}:{pw}@{host}:notaport/{db}",
    "postgresql://{user}@{host}/{db}?password={pw}&application_name=x",
    "postgresql://{user}:{pw}@/{db}?host=/tmp/sock",
    "postgresql://{user}:{pw}",
    "host={host} user={user} password={pw} dbname={db}",
    "host={host} password='{pw}' dbname={db}",
)


def _leaks(text: str, password: str) -> bool:
    return any(form and form in text for form in {password, unquote(password)})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:Secret@[::1/db", "postgresql://u@[::1/db"),
        ("postgresql://u:Se%63ret@db.example:5433/app", "postgresql://u@db.example:5433/app"),
        ("postgresql://holdfast@/t1?host=/tmp/x", "postgresql://holdfast@/t1?host=/tmp/x"),
        ("postgres://u:p@ss/w0rd@host/db", "postgresql://u@host/db"),
        ("postgresql://h/db?password=Secret", "postgresql://h/db"),
        ("postgresql://0:]", "postgresql://0:***/"),
        ("postgresql://[::1]/db", "postgresql://[::1]/db"),
    ],
)
def test_redact_examples(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize("url", ["postgresql://0:?", "postgresql://0:]", "postgresql://u:p/w?x#y"])
def test_a_password_made_of_url_syntax_is_never_echoed(url: str) -> None:
    password = url.partition("://")[2].partition(":")[2]
    message = f"invalid connection option in {url!r}: {password}"
    assert password not in scrub(message, url).replace("postgresql://", "")


def test_the_issue_example_never_shows_the_password() -> None:
    url = "postgresql://u:Secret@[::1/db"
    assert "Secret" not in redact(url)
    message = f'missing "]" in "{url}" and again Secret, decoded Secret'
    assert "Secret" not in scrub(message, url)


@given(user=_word, pw=_any, host=_word, db=_word, template=st.sampled_from(TEMPLATES))
def test_no_url_shows_its_password(user: str, pw: str, host: str, db: str, template: str) -> None:
    raw_forms = [pw, quote(pw, safe="")]
    for raw in raw_forms:
        if "'" in template and ("'" in raw or "\\" in raw):
            continue
        # unquoted in a keyword string, libpq ends a value at whitespace and reads quotes and
        # backslashes as syntax: such a "password" is not one (it must be written quoted)
        if template.startswith("host=") and "'" not in template:
            assume(not any(c.isspace() or c in "'\\" for c in raw))
        url = template.format(user=user, pw=raw, host=host, db=db)
        # what cannot be told apart from the rest of the URL is not a password to look for
        assume(raw not in (user, host, db))
        # with no "@host", libpq reads "u:5432" as a host and a port, never as a password
        assume(not (template.endswith("{pw}") and raw.isdigit()))
        shown = redact(url)
        assert not _leaks(shown, raw), (url, shown)
        driver_message = f"invalid connection option in {url!r}: {raw} ({unquote(raw)})"
        assert not _leaks(scrub(driver_message, url), raw)


@given(st.text(max_size=60))
def test_redact_never_raises(url: str) -> None:
    assert isinstance(redact(url), str)
    assert isinstance(redact("postgresql://" + url), str)


def test_sqlite_forms() -> None:
    assert sqlite_path("sqlite:///tmp/a.db") == "/tmp/a.db"
    assert sqlite_path("sqlite:////tmp/a.db") == "/tmp/a.db"
    assert sqlite_path("rel/a.db") == "rel/a.db"


@pytest.mark.parametrize("pw", [";", ";x", ";;"])
def test_a_keyword_string_password_runs_to_the_next_space(pw: str) -> None:
    """libpq reads ``password=;x`` as the password ``;x``: none of it may show (found by the
    property test above)."""
    url = f"host=0 user=0 password={pw} dbname=0"
    shown = redact(url)
    assert pw not in shown.replace("host=0 user=0 ", "").replace(" dbname=0", "").replace(
        "password=***", ""
    ), shown
    assert "password=***" in shown and shown.endswith("dbname=0"), shown
