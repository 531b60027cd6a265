"""The worker's SIGTERM/SIGINT handler takes no lock, so it cannot deadlock the main thread."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from harness_util import open_harness

from holdfast.harness import WorkerSettings


def test_a_signal_while_the_main_thread_holds_the_wake_lock_does_not_deadlock(
    tmp_path: Path,
) -> None:
    """A handler runs between two bytecodes of the main thread, which may be inside
    ``Event.wait``/``Event.clear`` holding the Event's plain lock; setting an Event there would
    block forever (seen as a worker that ignored SIGTERM in a 16-worker benchmark)."""
    with open_harness(str(tmp_path / "h.db")) as h:
        w = h.worker(WorkerSettings(poll_s=0.05))
        restore = w._install_signals()
        try:
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler)

            def signal_while_holding_the_lock() -> None:
                with w._wake._cond:  # what the main thread holds inside Event.clear()
                    handler(signal.SIGTERM, None)

            t = threading.Thread(target=signal_while_holding_the_lock, daemon=True)
            t.start()
            t.join(2)
            assert not t.is_alive(), "the signal handler blocked on the Event's lock"
        finally:
            restore()
        assert not w.draining.is_set(), "the handler only records the signal"
        started = time.monotonic()
        w.run()  # notices the recorded signal at once and drains
        assert w.draining.is_set() and time.monotonic() - started < 2


def test_sigterm_stops_an_idle_worker_within_a_quarter_second_of_polling(tmp_path: Path) -> None:
    with open_harness(str(tmp_path / "h.db")) as h:
        w = h.worker(WorkerSettings(poll_s=30.0))
        timer = threading.Timer(0.3, lambda: signal.raise_signal(signal.SIGTERM))
        started = time.monotonic()
        timer.start()
        w.run()
        took = time.monotonic() - started
    assert w.draining.is_set()
    assert took < 1.5, f"a 30 s idle poll held SIGTERM for {took:.2f} s"
