"""The host moves a box's worker into its cgroups (the pid comes from the kernel-attested
sender of the worker's hello), before any request reaches the box; a move that fails, or a box
that does not say hello, fails the start closed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from tests.sandbox.conftest import BACKENDS

from holdfast.sandbox import (
    SandboxPolicy,
    SandboxUnavailable,
    launch,
    open_sandbox,
    open_sync_sandbox,
)
from holdfast.sandbox.cgroup import BoxCgroup, create_box_cgroup
from holdfast.sandbox.process import BoxDied

SPECS = [("namespace", b) for b in BACKENDS] + [("process", "auto")]


def _cgroups_here() -> bool:
    probe = create_box_cgroup(8, None)
    if probe is None:
        return False
    probe.remove()
    return True


needs_cgroup = pytest.mark.skipif(not _cgroups_here(), reason="no writable pids cgroup here")


@needs_cgroup
@pytest.mark.parametrize(("isolation", "backend"), SPECS)
def test_the_worker_and_what_it_starts_are_in_the_box_cgroups(isolation: str, backend: str) -> None:
    policy = SandboxPolicy(isolation=isolation, backend=backend, background_processes=True)  # type: ignore[arg-type]
    with open_sync_sandbox(policy) as box:
        proc = box.sandbox._proc  # type: ignore[attr-defined]
        cg: BoxCgroup = proc.cgroup
        members = cg.pids()
        assert len(members) == 1  # the worker alone: the launcher chain stays outside
        (worker,) = members
        assert b"holdfast" not in Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")[0]
        assert launch.BOOTSTRAP.encode() in Path(f"/proc/{worker}/cmdline").read_bytes()
        r = box.execute("import subprocess\nkid = subprocess.Popen(['sleep', '30'])\n'ok'")
        assert r.ok, r.error
        assert len(cg.pids()) == 2  # born inside: a child inherits the group
        if cg.cpuacct is not None:
            joined = {int(p) for p in (cg.cpuacct / "cgroup.procs").read_text().split()}
            assert worker in joined
        assert cg.pids() <= proc.processes()


@needs_cgroup
def test_a_move_that_fails_fails_the_start_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def refuse(self: BoxCgroup, pid: int) -> None:
        seen.append(pid)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(BoxCgroup, "move", refuse)

    async def start() -> None:
        box = open_sandbox(SandboxPolicy(isolation="process"))
        try:
            with pytest.raises(SandboxUnavailable, match="cgroup"):
                await box.start()
        finally:
            await box.shutdown()

    asyncio.run(start())
    assert len(seen) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(seen[0], 0)


@pytest.mark.parametrize("first", ["os.write(fd,b'x')", "os.close(fd)"])
def test_a_box_without_its_hello_does_not_start(
    monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    monkeypatch.setattr(
        launch, "BOOTSTRAP", launch.BOOTSTRAP.replace("os.write(fd,b'\\0')", first, 1)
    )

    async def start() -> None:
        box = open_sandbox(SandboxPolicy(isolation="process"))
        try:
            with pytest.raises(BoxDied, match="did not start"):
                await box.start()
        finally:
            await box.shutdown()

    asyncio.run(start())
