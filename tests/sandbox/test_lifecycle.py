"""Deadlines, crashes, restarts from snapshots, cancellation, many boxes, fail-closed levels."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from holdfast.errors import InvalidInput
from holdfast.sandbox import (
    SandboxError,
    SandboxFatal,
    SandboxPolicy,
    SandboxUnavailable,
    launch,
    open_sandbox,
    open_sync_sandbox,
)

pytestmark = pytest.mark.sandbox


@pytest.mark.anyio
@pytest.mark.parametrize("isolation", ["namespace", "process"])
async def test_timeout_kills_and_restarts_from_the_snapshot(isolation: str, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("evidence")
    async with open_sandbox(SandboxPolicy(isolation=isolation)) as box:  # type: ignore[arg-type]
        await box.load("doc", path=src)
        await box.execute("total = 41\nhandle = open('/dev/null')")
        start = time.perf_counter()
        r = await box.execute("while True: pass", timeout=0.5)
        assert time.perf_counter() - start < 5
        assert r.timed_out and not r.fatal and r.error is not None
        assert "restarted from the last snapshot" in r.error.message
        after = await box.execute("(total + 1, doc, 'handle' in globals())")
        assert after.value_repr == "(42, 'evidence', False)"
        assert box.info.restarts == 1


@pytest.mark.anyio
async def test_os_exit_is_reported_and_the_box_restarts() -> None:
    async with open_sandbox() as box:
        await box.execute("v = [1, 2]")
        r = await box.execute("import os; os._exit(3)")
        assert r.error is not None and r.error.type == "SandboxDied"
        assert "exit status" in r.error.message and not r.fatal
        assert (await box.execute("v")).value_repr == "[1, 2]"


@pytest.mark.anyio
async def test_the_snapshot_each_cell_carries_is_the_globals_as_they_are_now() -> None:
    """Each cell's snapshot is the state after that cell: a value rebound to a new object (or
    to an equal one), a list changed in place, names that need escaping, text outside ASCII;
    a restart brings back exactly that."""
    async with open_sandbox() as box:
        await box.execute(
            "s = 'first'\nn = 1\nf = 0.5\nxs = [1, 2]\nglobals()['we\"ird\\n'] = 'é\\ud800'"
        )
        await box.execute("s = 'second'\nn = 2\nf = 0.5 + 0\nxs.append(3)\ngone = 1")
        await box.execute("del gone")
        r = await box.execute("import os; os._exit(3)")
        assert r.error is not None and r.error.type == "SandboxDied"
        after = await box.execute("(s, n, f, xs, globals()['we\"ird\\n'], 'gone' in globals())")
        assert after.value_repr == "('second', 2, 0.5, [1, 2, 3], 'é\\ud800', False)"
        assert await box.snapshot() == {
            "s": "second",
            "n": 2,
            "f": 0.5,
            "xs": [1, 2, 3],
            'we"ird\n': "é\ud800",
        }


@pytest.mark.anyio
async def test_cancelling_execute_kills_the_cell_promptly() -> None:
    async with open_sandbox() as box:
        await box.execute("n = 5")
        task = asyncio.create_task(box.execute("import time; time.sleep(300)"))
        await asyncio.sleep(0.3)
        start = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.perf_counter() - start < 1.0
        assert (await box.execute("n * 2")).value_repr == "10"


@pytest.mark.anyio
async def test_failed_restart_makes_the_box_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    box = open_sandbox(SandboxPolicy(isolation="process"))
    await box.start()
    try:
        monkeypatch.setattr(
            launch, "worker_source", lambda: "import os\nos._exit(9)\n", raising=True
        )
        r = await box.execute("import os; os._exit(1)")
        assert r.fatal and r.error is not None and "could not be restarted" in r.error.message
        with pytest.raises(SandboxFatal):
            await box.execute("1")
    finally:
        await box.shutdown()


@pytest.mark.anyio
async def test_thirty_two_boxes_at_once_do_not_mix() -> None:
    boxes = [open_sandbox(SandboxPolicy(cell_timeout_s=60)) for _ in range(32)]
    await asyncio.gather(*(b.start() for b in boxes))
    try:
        results = await asyncio.gather(
            *(
                b.execute(f"me = {i}\nfor k in range(200): print(me, k)\nsum(range(10**5)) + me")
                for i, b in enumerate(boxes)
            )
        )
        for i, r in enumerate(results):
            assert r.ok, r.error
            lines = r.stdout.splitlines()
            assert len(lines) == 200 and all(line.split()[0] == str(i) for line in lines)
            assert r.value_repr == str(sum(range(10**5)) + i)
    finally:
        await asyncio.gather(*(b.shutdown() for b in boxes))


def test_missing_bubblewrap_fails_closed_with_a_remedy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "bwrap_path", lambda: None)
    monkeypatch.setattr(launch, "unshare_available", lambda: False)
    with pytest.raises(SandboxUnavailable) as info:
        open_sync_sandbox()
    assert "apt-get install bubblewrap" in info.value.remedy
    assert info.value.code == "sandbox_unavailable"


def test_unknown_isolation_level_is_refused() -> None:
    with pytest.raises(SandboxUnavailable):
        open_sync_sandbox(SandboxPolicy(isolation="container"))  # type: ignore[arg-type]


def test_bad_inputs_are_typed_errors(tmp_path: Path) -> None:
    with open_sync_sandbox(SandboxPolicy(isolation="process")) as box:
        with pytest.raises(InvalidInput):
            box.load("not a name", 1)
        with pytest.raises(InvalidInput):
            box.load("x", path=tmp_path / "missing.txt")
        with pytest.raises(InvalidInput):
            box.load("x", path=tmp_path)
        with pytest.raises(InvalidInput):
            box.set("x", {1, 2})
        with pytest.raises(SandboxError):
            box.get("undefined_name")


def test_shutdown_leaves_no_process_or_workspace_behind() -> None:
    box = open_sync_sandbox(SandboxPolicy(isolation="process"))
    box.execute("open('marker', 'w').write('x')")
    proc = box.sandbox._proc  # type: ignore[attr-defined]
    pid, workdir = proc.popen.pid, proc.host_dir
    assert workdir is not None and os.path.exists(os.path.join(workdir, "marker"))
    box.shutdown()
    assert not os.path.exists(workdir)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.anyio
async def test_snapshot_skips_values_too_big_to_carry() -> None:
    policy = SandboxPolicy(isolation="process", max_message_bytes=1 << 20)
    async with open_sandbox(policy) as box:
        await box.execute("big = list(range(2_000_000))\nsmall = {'k': 'v'}")
        snap = await box.snapshot()
        assert snap == {"small": {"k": "v"}}
        r = await box.execute("while True: pass", timeout=0.3)
        assert r.timed_out
        after = await box.execute("('big' in globals(), small)")
        assert after.value_repr == "(False, {'k': 'v'})"


@pytest.mark.anyio
async def test_snapshot_counts_the_names_of_what_it_carries() -> None:
    """4,000 globals with 200-character names and one-digit values: 0.8 MB of names, over a
    1 MB message cap's half. The snapshot keeps what fits, names counted, and cells go on."""
    policy = SandboxPolicy(isolation="process", max_message_bytes=1 << 20)
    async with open_sandbox(policy) as box:
        r = await box.execute("for i in range(4000):\n    globals()['v%0199d' % i] = 1")
        assert r.ok, r.error
        snap = await box.snapshot()
        assert 1000 < len(snap) < 4000
        assert len(json.dumps(snap, separators=(",", ":"))) <= (1 << 20) // 2
        assert (await box.execute("len([k for k in globals() if k.startswith('v')])")).ok


@pytest.mark.anyio
@pytest.mark.parametrize("isolation", ["namespace", "process"])
async def test_cpu_seconds_limit_ends_a_spinning_worker(isolation: str) -> None:
    policy = SandboxPolicy(isolation=isolation, cpu_seconds=1)  # type: ignore[arg-type]
    async with open_sandbox(policy) as box:
        await box.execute("kept = 1")
        r = await box.execute("while True: pass", timeout=60)
        assert not r.timed_out and r.error is not None and r.error.type == "SandboxDied"
        assert (await box.execute("kept")).value_repr == "1"


@pytest.mark.anyio
async def test_a_request_during_a_long_cell_waits_for_it_instead_of_killing_it() -> None:
    """Request deadlines start when the request is sent; requests to one box go one at a time."""
    async with open_sandbox(SandboxPolicy(request_timeout_s=1.0)) as box:
        await box.execute("x = 5")
        cell = asyncio.create_task(box.execute("import time; time.sleep(2.5); y = 1"))
        await asyncio.sleep(0.2)
        assert await box.get("x") == 5
        r = await cell
        assert r.ok and box.info.restarts == 0
        assert await box.get("y") == 1
