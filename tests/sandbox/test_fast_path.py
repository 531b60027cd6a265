"""The low-latency wait (polling before sleeping, on both sides of the socket) changes timing,
never results: with it on or off, cells, host calls, large frames and leftover processes behave
the same, and a box that answers late is still waited for and a box that never answers still
meets its deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from holdfast.sandbox import SandboxPolicy, SyncSandbox, open_sync_sandbox

from .conftest import shared_functions

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module", params=[("namespace", 100), ("namespace", 0), ("process", 100)])
def box(request: pytest.FixtureRequest) -> Iterator[SyncSandbox]:
    isolation, spin = request.param
    b = open_sync_sandbox(
        SandboxPolicy(isolation=isolation, spin_us=spin, cell_timeout_s=20, request_timeout_s=20),
        shared_functions(),
    )
    yield b
    b.shutdown()


def test_many_quick_cells_and_host_calls_answer_in_order(box: SyncSandbox) -> None:
    for i in range(300):
        r = box.execute(f"echo({i}) + add({i}, 1)")
        assert r.ok, r.error
        assert r.value_repr == str(2 * i + 1)


def test_a_burst_of_host_calls_from_threads_all_return(box: SyncSandbox) -> None:
    r = box.execute(
        "import threading\nout = {}\n"
        "def work(k):\n"
        "    out[k] = sum(echo(j) for j in range(200))\n"
        "ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "sorted(out.values())"
    )
    assert r.ok, r.error
    assert r.value_repr == str([sum(range(200))] * 8)


def test_frames_larger_than_one_receive_buffer_arrive_whole(box: SyncSandbox) -> None:
    text = "x" * (3 * 1024 * 1024 + 17)  # over the box's 1 MiB receive buffer, in many reads
    box.set("big", text)
    r = box.execute("len(big), big[:3], big[-3:]")
    assert r.ok, r.error
    assert r.value_repr == str((len(text), "xxx", "xxx"))
    assert box.get("big") == text


def test_a_reply_later_than_the_spin_is_still_received(box: SyncSandbox) -> None:
    started = time.monotonic()
    r = box.execute("import time\ntime.sleep(0.05)\n'late'")
    assert r.ok, r.error
    assert r.value_repr == "'late'"
    assert time.monotonic() - started >= 0.05


def test_a_leftover_process_is_seen_and_killed_after_each_cell(box: SyncSandbox) -> None:
    """Each cell's check of the box's processes reads them afresh: a process started by a later
    cell is found too (a cached process list would miss it)."""
    for _ in range(3):
        r = box.execute("import subprocess\np = subprocess.Popen(['sleep', '30'])\np.pid")
        assert r.ok, r.error
        r = box.execute("import time\ntime.sleep(0.05)\np.poll()")
        assert r.ok, r.error
        assert r.value_repr == "-9"


def test_a_box_that_never_answers_still_meets_its_deadline() -> None:
    b = open_sync_sandbox(SandboxPolicy(isolation="process", cell_timeout_s=0.3))
    try:
        started = time.monotonic()
        r = b.execute("while True: pass")
        assert r.timed_out
        assert time.monotonic() - started < 5
        assert b.execute("1 + 1").value_repr == "2"
    finally:
        b.shutdown()
