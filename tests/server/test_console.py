"""The console without a browser: sessions, cross-site refusals, escaping of hostile text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.server.conftest import BASE, scripted_spec

from holdfast.harness import WorkerSettings
from holdfast.server import ServerSettings, Services, create_app

HOSTILE = (
    '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'
    "\x1b[31mred\x1b[0m\x07 \u202eevil"
)


def login(c: TestClient, token: str) -> str:
    r = c.post(
        "/console/login", data={"token": token}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    page = c.get("/console/").text
    found = re.search(r'name="csrf" value="([^"]+)"', page) or re.search(
        r'name="csrf" value="([^"]*)"', c.get("/console/approvals").text
    )
    return found.group(1) if found else ""


def csrf_of(c: TestClient, path: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)
    assert found, path
    return found.group(1)


def test_login_sets_a_strict_http_only_cookie(app: FastAPI, token: str) -> None:
    with TestClient(app, base_url=BASE) as c:
        r = c.get("/console/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        bad = c.post("/console/login", data={"token": "hft_nope"}, headers={"Origin": BASE})
        assert bad.status_code == 401 and "invalid" in bad.text
        r = c.post(
            "/console/login",
            data={"token": token},
            headers={"Origin": BASE},
            follow_redirects=False,
        )
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        page = c.get("/console/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"


def test_a_revoked_token_ends_its_console_session(app: FastAPI, services: Services) -> None:
    info, token = services.tokens.create("temp")  # type: ignore[union-attr]
    with TestClient(app, base_url=BASE) as c:
        login(c, token)
        assert c.get("/console/").status_code == 200
        services.tokens.revoke(info.id)  # type: ignore[union-attr]
        assert c.get("/console/", follow_redirects=False).status_code == 303


def test_cross_site_forms_are_refused(
    app: FastAPI, services: Services, token: str, tmp_path: Path
) -> None:
    task = services.harness.submit(scripted_spec(tmp_path, ask=True), by="test")
    services.harness.run_until_idle(WorkerSettings(poll_s=0.01))
    step = services.harness.get(task.id).waiting["step"]  # type: ignore[index]
    with TestClient(app, base_url=BASE) as c:
        login(c, token)
        csrf = csrf_of(c, f"/console/tasks/{task.id}")
        url = f"/console/tasks/{task.id}/approve"
        attempts = [
            ({"step": step}, {"Origin": BASE}),  # no CSRF token
            ({"step": step, "csrf": "forged"}, {"Origin": BASE}),  # a wrong one
            ({"step": step, "csrf": csrf}, {"Origin": "http://evil.example"}),  # another origin
            ({"step": step, "csrf": csrf}, {}),  # no Origin and no Referer
            ({"step": step, "csrf": csrf}, {"Origin": BASE, "Sec-Fetch-Site": "cross-site"}),
        ]
        for data, headers in attempts:
            r = c.post(url, data=data, headers=headers, follow_redirects=False)
            assert r.status_code == 403, (data, headers)
        assert services.harness.get(task.id).status == "waiting_approval"
        assert services.harness.approvals(task.id)[0].decision is None
        r = c.post(
            url, data={"step": step, "csrf": csrf}, headers={"Origin": BASE}, follow_redirects=False
        )
        assert r.status_code == 303
        assert services.harness.approvals(task.id)[0].decided_by == "api:alice"


def test_hostile_text_is_escaped_everywhere(
    app: FastAPI, services: Services, token: str, tmp_path: Path
) -> None:
    spec = scripted_spec(tmp_path, ask=True)
    spec["goal"] = HOSTILE + "x" * (10 * 1024 * 1024)  # a 10 MB goal
    task = services.harness.submit(spec, by="test")
    services.harness.steer(task.id, "message", HOSTILE, by=HOSTILE)
    with services.memory_session() as store:
        item = store.add(HOSTILE + " Alice Chen", namespace="default", trust="untrusted").item
    with TestClient(app, base_url=BASE) as c:
        login(c, token)
        pages = {
            "tasks": c.get("/console/"),
            "task": c.get(f"/console/tasks/{task.id}"),
            "receipts": c.get(f"/console/tasks/{task.id}/receipts"),
            "memory": c.get("/console/memory", params={"q": "Alice"}),
            "item": c.get(f"/console/memory/items/{item.id}"),
            "error": c.get("/console/tasks/" + "%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        }
        for name, r in pages.items():
            html = r.text
            assert "<script>window" not in html and "<img src=x" not in html, name
            assert "\x1b" not in html and "\x07" not in html and "\u202e" not in html, name
            assert "<script>alert" not in html, name
            assert len(html) < 1_000_000, (name, len(html))
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in pages["task"].text
        assert "\\x1b[31mred" in pages["task"].text
        assert "characters not shown" in pages["task"].text
        assert "untrusted: quote, do not follow" in pages["memory"].text


@pytest.mark.parametrize("path", ["/console/static/../app.py", "/console/static/console.py"])
def test_static_files_are_only_ours(app: FastAPI, path: str) -> None:
    with TestClient(app, base_url=BASE) as c:
        assert c.get(path).status_code == 404
        assert (
            c.get("/console/static/console.js")
            .headers["content-type"]
            .startswith("text/javascript")
        )


def test_without_auth_the_console_opens_for_the_local_user(services: Services) -> None:
    app = create_app(ServerSettings(auth=False), services=services)
    with TestClient(app, base_url=BASE) as c:
        page = c.get("/console/")
        assert page.status_code == 200 and ">local<" in page.text


def test_demo_serve_starts_a_console_that_logs_in(holdfast_home: Path) -> None:
    import httpx
    from rich.console import Console as RichConsole

    from holdfast.cli.demo import _start_server

    out = RichConsole(record=True, width=60)
    server, url = _start_server(out, 0)
    try:
        assert url.startswith(server.url + "/console/login#token=hft_")
        assert url in out.export_text().replace("\n", "")
        token = url.split("#token=")[1]
        with httpx.Client(base_url=server.url) as c:
            r = c.post("/console/login", data={"token": token}, headers={"Origin": server.url})
            assert r.status_code == 303
            assert c.get("/console/").status_code == 200
    finally:
        server.stop()
