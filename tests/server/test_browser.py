"""The console in a real browser: Playwright driving Debian's chromium (never a download).

One live demo task (the scripted demo agent, slowed so its turns arrive one by one) is watched
from the console: turns appear without a reload, the gated write waits for the Approve button,
the task finishes, its receipts verify, its RLM trace opens as a tree, and memory search shows
trust marks. Screenshots go to the test's temporary folder (and, when
``HOLDFAST_CONSOLE_SCREENSHOTS`` names a folder, there too).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from holdfast.harness import WorkerSettings
from holdfast.lm.types import Completion, Message
from holdfast.memory import MemoryConfig, MemoryStore, NoEmbedder
from holdfast.server import ServerSettings, Services, create_app
from holdfast.server.run import ServerThread

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
    ),
    pytest.mark.sandbox,
]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1360, "height": 900},
            # the console's Content-Security-Policy is bypassed: it would stop an injected
            # script too, and the hostile-content test must prove the escaping on its own
            bypass_csp=True,
        )
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            context.close()


def shoot(page: Any, tmp_path: Path, name: str) -> Path:
    out = tmp_path / "screenshots"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    extra = os.environ.get("HOLDFAST_CONSOLE_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    assert path.stat().st_size > 5_000
    return path


@pytest.fixture
def demo(holdfast_home: Path) -> Iterator[dict[str, Any]]:
    """A live server over a harness running the demo task on a background worker."""
    from holdfast.agent.demo import (
        NAMESPACE,
        demo_kind,
        demo_spec,
        make_workspace,
        scripted_agent,
        scripted_rlm_root,
    )
    from holdfast.testing import FunctionLM

    settings = ServerSettings(port=0, isolation="process")
    svc = Services.open(settings)
    memory = MemoryStore(MemoryConfig(), embedder=NoEmbedder(warn=False))
    svc.memory_factory = lambda: memory
    memory.add("Runbook: payment retries are capped at 3 attempts per order.",
               namespace=NAMESPACE, trust="owner")  # fmt: skip

    go = threading.Event()  # turns after the third wait until the browser watches

    def slow_agent(messages: list[Message], **kw: Any) -> Completion:
        reply = scripted_agent(messages, **kw)
        turn = int(re.search(r"turn (\d+)\)", reply.text).group(1))  # type: ignore[union-attr]
        if turn >= 3:
            go.wait(60)
        return reply

    agent_lm = FunctionLM(slow_agent, model="scripted:demo-agent", latency=0.12)
    rlm_root = FunctionLM(scripted_rlm_root, model="scripted:demo-rlm-root")
    svc.harness.registry.register(demo_kind(agent_lm, rlm_root, memory, db_path=svc.home_db))
    workdir = make_workspace(Path(tempfile.mkdtemp(prefix="holdfast-console-", dir=holdfast_home)),
                             files=2, lines_per_file=3000)  # fmt: skip
    _, token = svc.tokens.create("operator")  # type: ignore[union-attr]
    app = create_app(settings, services=svc)
    worker = svc.harness.worker(WorkerSettings(poll_s=0.05, lease_ttl_s=30))
    thread = threading.Thread(target=worker.run, daemon=True)
    with ServerThread(app, settings) as server:
        task = svc.harness.submit(demo_spec(workdir), by="test")
        thread.start()
        try:
            yield {"server": server, "token": token, "task": task.id, "svc": svc,
                   "workdir": workdir, "go": go}  # fmt: skip
        finally:
            go.set()
            worker.stop()
            thread.join(30)
    svc.close()


def test_the_console_on_a_live_demo_task(
    demo: dict[str, Any], browser_page: Any, tmp_path: Path
) -> None:
    page = browser_page
    url, task = demo["server"].url, demo["task"]
    page.goto(f"{url}/console/login#token={demo['token']}")
    page.wait_for_url(f"{url}/console/")
    assert page.locator("#task-list").inner_text().count(task) == 1
    shoot(page, tmp_path, "console-tasks")

    page.goto(f"{url}/console/tasks/{task}")
    page.wait_for_selector("#live.on")
    first = page.locator("tr.turn").count()
    assert first <= 3
    demo["go"].set()
    page.wait_for_function(f"document.querySelectorAll('tr.turn').length > {first + 2}")
    assert page.locator("tr.turn").count() > first + 2  # turns arrived without a reload
    shoot(page, tmp_path, "console-task-live")

    page.wait_for_selector("#approve", timeout=120_000)
    assert (
        "REPORT.md" in page.locator("#approval").inner_text()
        or page.locator("#approval-step").count()
    )
    assert page.locator("#task-status").inner_text() == "waiting_approval"
    shoot(page, tmp_path, "console-approval")
    page.click("#approve")
    page.wait_for_function(
        "document.getElementById('task-status') && "
        "document.getElementById('task-status').textContent === 'succeeded'",
        timeout=120_000,
    )
    assert (demo["workdir"] / "REPORT.md").exists()
    assert page.locator("#working-set").inner_text().count("cont ") >= 2  # it rolled over
    shoot(page, tmp_path, "console-task-done")

    receipts = demo["svc"].harness.receipts(task)
    assert any(
        r.data()["kind"] == "approval" and r.data()["actor"] == "api:operator" for r in receipts
    )
    page.goto(f"{url}/console/tasks/{task}/receipts")
    assert page.locator("#verify").inner_text().startswith("Verified:")
    shoot(page, tmp_path, "console-receipts")

    page.goto(f"{url}/console/rlm")
    page.click("#traces a")
    page.wait_for_selector("#trace-tree details.run")
    tree = page.locator("#trace-tree").inner_text()
    assert "turn 1" in tree and "counts.most_common" in tree
    shoot(page, tmp_path, "console-trace")

    page.goto(f"{url}/console/memory?namespace=demo")
    page.fill("#q", "failed payments by code")
    page.press("#q", "Enter")
    page.wait_for_selector("#hits li.hit")
    hits = page.locator("#hits").inner_text()
    assert "Failed payments in the demo logs" in hits and "agent" in hits
    shoot(page, tmp_path, "console-memory")


def test_hostile_content_never_runs_in_the_browser(
    browser_page: Any, services: Services, tmp_path: Path
) -> None:
    from tests.server.conftest import scripted_spec
    from tests.server.test_console import HOSTILE

    spec = scripted_spec(tmp_path, ask=True)
    spec["goal"] = HOSTILE
    task = services.harness.submit(spec, by="test")
    services.harness.run_until_idle(WorkerSettings(poll_s=0.01))
    services.harness.steer(task.id, "message", HOSTILE, by="test")
    with services.memory_session() as store:
        store.add(HOSTILE + " hostile memory", trust="untrusted")
    settings = ServerSettings(port=0, auth=False)
    app = create_app(settings, services=services)
    with ServerThread(app, settings) as server:
        page = browser_page
        alerts: list[str] = []

        def on_dialog(dialog: Any) -> None:
            alerts.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        for path in (f"/console/tasks/{task.id}", f"/console/tasks/{task.id}/receipts",
                     "/console/memory?q=hostile", "/console/approvals", "/console/"):  # fmt: skip
            page.goto(server.url + path)
            page.wait_for_load_state("networkidle")
            assert page.evaluate("window.__pwned") is None, path
            assert page.locator("img[src='x']").count() == 0, path
        page.goto(server.url + f"/console/tasks/{task.id}")
        assert "<script>window.__pwned=1</script>" in page.locator("#goal").inner_text()
        shoot(page, tmp_path, "console-hostile")
    assert alerts == []


def test_a_cross_site_form_cannot_approve(
    browser_page: Any, services: Services, tmp_path: Path
) -> None:
    """A page on another origin auto-submits an approve form to the console: refused."""
    from tests.server.conftest import scripted_spec

    task = services.harness.submit(scripted_spec(tmp_path, ask=True), by="test")
    services.harness.run_until_idle(WorkerSettings(poll_s=0.01))
    step = services.harness.get(task.id).waiting["step"]  # type: ignore[index]
    _, token = services.tokens.create("victim")  # type: ignore[union-attr]
    settings = ServerSettings(port=0)
    app = create_app(settings, services=services)
    evil = tmp_path / "evil"
    evil.mkdir()
    with ServerThread(app, settings) as server:
        (evil / "index.html").write_text(
            f'<form id="f" method="post" action="{server.url}/console/tasks/{task.id}/approve">'
            f'<input name="step" value="{step}"><input name="csrf" value="guess"></form>'
            '<script>document.getElementById("f").submit()</script>'
        )
        import functools
        import http.server

        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(evil))
        attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=attacker.serve_forever, daemon=True).start()
        try:
            page = browser_page
            page.goto(f"{server.url}/console/login#token={token}")
            page.wait_for_url(f"{server.url}/console/")
            page.goto(f"http://localhost:{attacker.server_address[1]}/index.html")
            page.wait_for_load_state("networkidle")
        finally:
            attacker.shutdown()
            attacker.server_close()
    assert services.harness.get(task.id).status == "waiting_approval"
    assert services.harness.approvals(task.id)[0].decision is None
