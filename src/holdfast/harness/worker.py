"""Workers: lease tasks, keep their leases alive, run them, and let go cleanly.

One worker process runs up to ``concurrency`` tasks in threads. A single ticker thread does three
bounded jobs on a fixed tick (it sleeps on an event between ticks, so it can never spin): it
extends held leases every ``heartbeat_s``, polls steering for running tasks (on PostgreSQL the
worker's listening connection, its doorbell, also wakes it at once: see ``store_wake``), and cancels in-flight work whose wall-clock budget ran
out. The main loop re-queues expired leases (the reaper), leases new work within the concurrency
limits, and on SIGTERM/SIGINT stops leasing: running tasks give their lease back at their next
step boundary, after finishing the current step.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any

from holdfast.errors import BudgetExceeded, Cancelled, HoldfastError, InvalidInput, RetryableFailure
from holdfast.harness.context import StepContext, TaskInterrupt
from holdfast.harness.receipts import canonical_json, sha256_json
from holdfast.harness.registry import Registry
from holdfast.harness.rows import Draft, LeaseLost, StoreUnavailable, TaskRow
from holdfast.harness.store import SQLHarnessStore
from holdfast.harness.store_core import (
    STEERING_CHANNEL,
    TASKS_CHANNEL,
    IdleAfter,
    LeaseRead,
    wakes,
)
from holdfast.harness.store_wake import STALE_S
from holdfast.harness.verify import ReceiptsBroken
from holdfast.store import RANG, WAITED, StoreError

log = logging.getLogger("holdfast.harness.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker leases and runs tasks."""

    concurrency: int = 1
    queues: tuple[str, ...] | None = None
    lease_ttl_s: float = 30.0
    heartbeat_s: float | None = None
    poll_s: float = 0.5
    notify_poll_s: float = 1.0
    """The idle poll while the store announces new work (PostgreSQL LISTEN): a fallback for
    tasks whose retry delay ran out, which nobody announces."""
    steer_poll_s: float = 0.5
    reap_every_s: float | None = None
    store_retry_s: float = 120.0
    exit_when_idle: bool = False
    max_tasks: int | None = None
    worker_id: str | None = None
    task_ids: tuple[str, ...] | None = None
    """Lease only these tasks (``holdfast run`` runs the task it created, nobody else's)."""
    prefetch: int = 4
    """How many ready tasks one lease may take while work keeps waiting and tasks end quickly
    (the last one ran under ``prefetch_below_s``): the further ones wait here, heartbeated,
    and go back to the queue if they wait past ``prefetch_hold_s`` or the worker stops. 1 turns
    it off."""
    prefetch_below_s: float = 0.05
    prefetch_hold_s: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "lease_ttl_s",
            "heartbeat_s",
            "poll_s",
            "notify_poll_s",
            "steer_poll_s",
            "reap_every_s",
            "prefetch_below_s",
            "prefetch_hold_s",
        ):
            value = getattr(self, name)
            if value is not None and not _positive(value):
                raise InvalidInput(
                    f"worker setting {name} must be a positive number, got {value!r}"
                )
        if not _positive(self.store_retry_s) and self.store_retry_s != 0:
            raise InvalidInput(f"store_retry_s must be a number >= 0, got {self.store_retry_s!r}")
        for name in ("concurrency", "max_tasks", "prefetch"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidInput(f"worker setting {name} must be an integer >= 1, got {value!r}")

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_ttl_s / 3

    @property
    def reap_interval(self) -> float:
        return self.reap_every_s if self.reap_every_s is not None else self.lease_ttl_s / 2


class _Running:
    def __init__(
        self, task: TaskRow, token: str, ctx: StepContext | None, read: LeaseRead | None = None
    ) -> None:
        self.task = task
        self.token = token
        self.ctx = ctx
        self.read = read
        # a prefetched task, until it starts: when it was leased, whether steering came for it
        # (its lease's read of the steering is then stale), whether its lease was lost
        self.waiting_since: float | None = None
        self.steered = False
        self.lost = False


class Worker:
    """Runs tasks from a store with a registry of kinds. ``run()`` blocks until it stops."""

    def __init__(
        self, store: SQLHarnessStore, registry: Registry, settings: WorkerSettings | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings or WorkerSettings()
        self.id = self.settings.worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        self.draining = threading.Event()
        self._wake = threading.Event()
        self._poll_now = threading.Event()
        self._listening = threading.Event()
        self._registered_at: float | None = None  # registered as idle (monotonic time), if so
        self._claimed = False  # a submit claimed this worker's registration for its task
        self._found = False  # more work waited at the last lease: the next one skips the look
        # a task's end registered this worker as idle and looked for work: found none, and no
        # announcement came since (the main loop need not look again)
        self._looked_idle = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._fill_lock = threading.Lock()
        # Set by the SIGTERM/SIGINT handler and acted on by the main loop: a handler runs between
        # two bytecodes of the main thread, possibly while that thread holds an Event's internal
        # lock (Event.wait and Event.clear take it), so it must take no lock itself.
        self._signalled: int | None = None
        self._running: dict[str, _Running] = {}
        self._ready: deque[_Running] = deque()  # prefetched, not started (also in _running)
        self._last_run_s = math.inf  # how long the last task ran (prefetch only after short ones)
        self._pool: ThreadPoolExecutor | None = None
        self.completed = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop leasing; running tasks release at their next step boundary."""
        self.draining.set()
        self._wake.set()

    def run(self) -> int:
        """Lease and run tasks until stopped (or idle, with ``exit_when_idle``). Returns tasks run."""
        self.store.backend.check_writable()
        restore = self._install_signals()
        ticker = threading.Thread(target=self._tick_loop, name="holdfast-ticker", daemon=True)
        ticker.start()
        listener = self._start_listener()
        last_reap = 0.0
        quiet_until = 0.0
        backoff = self.settings.poll_s
        try:
            while not self._drain_requested():
                self._wake.clear()  # before looking, so an announcement meanwhile is not lost
                try:
                    now = time.monotonic()
                    if now - last_reap >= self.settings.reap_interval:
                        self.store.reap()
                        last_reap = now
                    looked, self._looked_idle = self._looked_idle, False
                    if looked and not self._claimed and not self._found:
                        leased = False  # the task's end just registered and looked
                    elif self._claimed or not self._may_register():
                        leased = self._fill()
                        leased = self._idle_or_busy() or leased
                    else:  # about to register: its look for work is the one after it
                        leased = self._idle_or_busy()
                    backoff = self.settings.poll_s
                except RetryableFailure as exc:
                    quiet_until = self._log_once("worker", quiet_until, exc.message)
                    self._pause(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if self._done_enough():
                    break
                if self.settings.exit_when_idle and not leased and not self._active():
                    break
                self._pause(self._idle_wait())
        finally:
            self.draining.set()
            with self._fill_lock:
                pass  # a lease a task's thread is taking now is handed to the pool before it closes
            self._unregister()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            with self._fill_lock:
                left = list(self._ready)
                self._ready.clear()
            self._give_back(left, "the worker stopped before it started the task")
            self._stopped.set()
            self._poll_now.set()
            ticker.join(timeout=5)
            if listener is not None:
                listener.join(timeout=5)
            restore()
        return self.completed

    def _may_register(self) -> bool:
        """Whether :meth:`_idle_or_busy` would register this worker as idle now (and then
        look for work)."""
        if not self._listening.is_set() or self.draining.is_set():
            return False
        if self._started() >= self.settings.concurrency or self._ready:
            return False
        at = self._registered_at
        return at is None or time.monotonic() - at >= STALE_S / 4

    def _idle_or_busy(self) -> bool:
        """Keep this worker's idle registration true (PostgreSQL): registered while it has a
        free slot and found nothing to lease, so a submit wakes it alone; not while full. After
        registering it looks for work once more (see ``store_wake``); whether that leased."""
        if not self._listening.is_set() or self.draining.is_set():
            return False
        if self._started() >= self.settings.concurrency or self._ready:
            self._unregister()
            return False
        if not self._may_register():
            return False
        # marked first: a claim's notification may arrive before register_idle returns
        self._registered_at = time.monotonic()
        try:
            self.store.register_idle(self.id, self.settings.queues, self.registry.names())
        except BaseException:
            self._registered_at = None
            raise
        # a lease that fills the last slot removes the registration in its own round trip
        return self._fill()

    def _unregister(self) -> None:
        if self._registered_at is None:
            return
        self._registered_at = None
        try:
            self.store.unregister_idle(self.id)
        except RetryableFailure:
            pass  # a stale registration costs one missed wake-up, and is dropped in time

    def _idle_wait(self) -> float:
        """How long to sleep between looks for work: short when polling is all there is, long
        while new work is announced (every announcement wakes the loop at once)."""
        s = self.settings
        if not self._listening.is_set():
            return s.poll_s
        return max(s.poll_s, min(s.notify_poll_s, s.reap_interval))

    def _done_enough(self) -> bool:
        m = self.settings.max_tasks
        return m is not None and self.completed >= m and not self._active()

    def _active(self) -> int:
        """Tasks this worker holds a lease on: running, or prefetched and waiting to start."""
        with self._lock:
            return len(self._running)

    def _started(self) -> int:
        """Tasks running now (each takes a slot of ``concurrency``)."""
        with self._lock:
            return len(self._running) - len(self._ready)

    def _install_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # No logging, no Event.set: see ``_signalled``. The loop wakes within ``poll_s``.
            self._signalled = signum

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    def _pause(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a wake-up, noticing a signal within a quarter second."""
        deadline = time.monotonic() + seconds
        while self._signalled is None:
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, 0.25)):
                return

    def _drain_requested(self) -> bool:
        """Whether to stop leasing; turns a received signal into :meth:`stop`."""
        if self._signalled is not None and not self.draining.is_set():
            log.info("signal %s: finishing current steps, then releasing leases", self._signalled)
            self.stop()
        return self.draining.is_set()

    def _fill(self) -> bool:
        """Lease tasks while a slot is free; whether any was leased. Called by the main loop,
        and by a task's thread as it finishes (see :meth:`_execute`), one at a time."""
        with self._fill_lock:
            return self._fill_locked()

    def _fill_locked(self) -> bool:
        leased = False
        while not self._drain_requested() and self._started() < self.settings.concurrency:
            if self._ready:  # a prefetched task: no round trip to start it
                with self._lock:
                    entry = self._ready.popleft()
                self._start(entry)
                leased = True
                continue
            m = self.settings.max_tasks
            if m is not None and self.completed + self._active() >= m:
                break
            claimed, self._claimed = self._claimed, False
            # a lease that fills the last slot ends this worker's idle registration with it,
            # and so does one a submit woke it for (which marked the registration, see
            # store_wake: the lease ends the mark)
            full = self._started() + 1 >= self.settings.concurrency
            registered = (self._registered_at is not None and full) or claimed
            got = self.store.lease_to_run(
                self.id,
                self.settings.queues,
                self.settings.lease_ttl_s,
                self.registry.names(),
                self.settings.task_ids,
                # a submit said a task waits for this worker, or more work waited at the last
                look_first=not (claimed or self._found),
                unregister=registered,
                limit=self._prefetch_limit(),
            )
            self._found = got is not None and got.more
            if got is None:
                break
            if registered:
                self._registered_at = None
            leased = True
            entry = _Running(got.task, got.token, None, got.read)
            now = time.monotonic()
            with self._lock:
                self._running[got.task.id] = entry
                for extra in got.also:
                    waiting = _Running(extra.task, extra.token, None, extra.read)
                    waiting.waiting_since = now
                    self._running[extra.task.id] = waiting
                    self._ready.append(waiting)
            self._start(entry)
        return leased

    def _prefetch_limit(self) -> int:
        """How many tasks the next lease may take: more than one only while work keeps
        waiting (the last lease saw more) and tasks end quickly, within ``max_tasks``."""
        s = self.settings
        if s.prefetch <= 1 or not self._found or self._last_run_s >= s.prefetch_below_s:
            return 1
        limit = s.prefetch
        if s.max_tasks is not None:
            limit = min(limit, s.max_tasks - self.completed - self._active())
        return max(1, limit)

    def _start(self, entry: _Running) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.settings.concurrency, thread_name_prefix="holdfast-task"
            )
        self._pool.submit(self._execute, entry)

    def _give_back(self, entries: list[_Running], reason: str) -> None:
        """Release prefetched tasks that did not start, so another worker can take them."""
        for entry in entries:
            try:
                self.store.release(
                    entry.task.id,
                    entry.token,
                    status="queued",
                    draft=Draft(
                        "released", {"worker": self.id, "reason": reason, "started": False}
                    ),
                    unstarted=True,
                )
            except (LeaseLost, StoreError, RetryableFailure) as exc:
                # the lease runs out by itself and the reaper queues the task again
                log.warning("task %s: could not give back its lease: %s", entry.task.id, exc)
            finally:
                with self._lock:
                    self._running.pop(entry.task.id, None)

    def _give_back_stale(self) -> None:
        """Prefetched tasks that waited past ``prefetch_hold_s`` (the task before them runs
        long) go back to the queue."""
        hold = self.settings.prefetch_hold_s
        now = time.monotonic()
        if not self._ready or not self._fill_lock.acquire(timeout=0.05):
            return
        try:
            stale = [e for e in self._ready if now - (e.waiting_since or now) > hold]
            with self._lock:
                for e in stale:
                    self._ready.remove(e)
        finally:
            self._fill_lock.release()
        if stale:
            self._give_back(stale, f"it waited {hold:g} s behind a longer task on this worker")
            self._wake.set()

    # -- running one task ------------------------------------------------------------------

    def _execute(self, entry: _Running) -> None:
        task, token = entry.task, entry.token
        try:
            try:
                kind = self.registry.get(task.kind)
                ctx = StepContext(
                    store=self.store,
                    task=task,
                    token=token,
                    kind=kind,
                    worker_id=self.id,
                    draining=self.draining,
                    store_retry_s=self.settings.store_retry_s,
                )
            except HoldfastError as exc:
                self._finish(task, token, "failed", None, exc.to_dict(), {})
                return
            entry.ctx = ctx
            if entry.read is not None:
                # steering that came while it waited makes the lease's read of it stale
                ctx.preload(entry.read, steering=not entry.steered)
                entry.read = None
            if entry.lost:
                ctx.lose_lease()
            try:
                ctx._call(ctx.check_receipts)
            except ReceiptsBroken as exc:
                # what is stored is not what was submitted (or done): never act on it
                log.error("task %s: %s", task.id, exc.message)
                self._finish(task, token, "failed", None, exc.to_dict(), ctx.budget.used(), ctx)
                return
            self._drive(ctx)
        except LeaseLost:
            log.warning("task %s: lease lost; leaving it to its new holder", task.id)
        except (StoreUnavailable, RetryableFailure) as exc:
            log.warning("task %s abandoned, the store is unavailable: %s", task.id, exc)
        except Exception:
            log.exception("task %s: the worker failed to record its outcome", task.id)
        finally:
            with self._lock:
                self._running.pop(task.id, None)
                self.completed += 1
            if not self._next_here():
                self._wake.set()

    def _next_here(self) -> bool:
        """Lease the next task from the thread that just finished one, when there is more work
        (its run is queued to this same pool thread: no wake-up of the main loop, no switch of
        threads); whether it did. Anything unusual is left to the main loop."""
        if self._drain_requested() or self._signalled is not None:
            return False
        if not self._found and not self._ready:
            return False
        if self._done_enough():
            return False
        try:
            return self._fill()
        except Exception:
            return False  # the main loop retries, and reports what keeps failing

    def _drive(self, ctx: StepContext) -> None:
        task, token = ctx.task, ctx.token
        try:
            ctx.boundary()
            # only the kind's own work is timed: the finish's round trip, which waits longer
            # the busier the machine, says nothing about whether tasks of this queue are short
            began = time.monotonic()
            try:
                result = ctx.kind.run(ctx)
            finally:
                self._last_run_s = time.monotonic() - began
        except TaskInterrupt as intr:
            self._interrupted(ctx, intr)
            return
        except (LeaseLost, StoreError):
            raise
        except BudgetExceeded as exc:
            self._out_of_budget(ctx, exc)
            return
        except Exception as exc:
            if ctx.cancel.cancelled:  # work cut off by a stop, pause or budget: say which
                try:
                    ctx.stop_here()
                except TaskInterrupt as intr:
                    self._interrupted(ctx, intr)
                    return
                except BudgetExceeded as budget_exc:
                    self._out_of_budget(ctx, budget_exc)
                    return
                except Cancelled:
                    pass
            if ctx.budget.exhausted() is not None:
                try:
                    ctx.budget.check(partial=ctx.state, trace_id=task.id)
                except BudgetExceeded as budget_exc:
                    self._out_of_budget(ctx, budget_exc)
                    return
            if (
                isinstance(exc, RetryableFailure)
                and not isinstance(exc, StoreUnavailable)
                and task.attempts < task.max_attempts
            ):
                delay = min(2.0**task.attempts, 300.0)
                ctx._call(
                    self.store.release,
                    task.id,
                    token,
                    status="queued",
                    draft=Draft("released", {"reason": exc.message, "retry_in_s": delay}),
                    run_after=delay,
                    usage=ctx.budget.used(),
                )
                return
            err = exc.to_dict() if isinstance(exc, HoldfastError) else _error(exc)
            self._finish(task, token, "failed", ctx.state, err, ctx.budget.used(), ctx)
            return
        self._finish(task, token, "succeeded", result, None, ctx.budget.used(), ctx)

    def _out_of_budget(self, ctx: StepContext, exc: BudgetExceeded) -> None:
        partial = exc.partial if exc.partial is not None else ctx.state
        err = exc.to_dict()
        err.pop("partial", None)
        self._finish(ctx.task, ctx.token, "failed", partial, err, ctx.budget.used(), ctx)

    def _interrupted(self, ctx: StepContext, intr: TaskInterrupt) -> None:
        task, token = ctx.task, ctx.token
        consume = [intr.steering.id] if intr.steering is not None else []
        usage = ctx.budget.used()
        if intr.action == "stop":
            self._finish(task, token, "cancelled", ctx.state, None, usage, ctx, consume)
        elif intr.action in ("pause", "release"):
            draft = (
                Draft("paused", {"worker": self.id, "steering_id": consume[0] if consume else None})
                if intr.action == "pause"
                else Draft("released", {"worker": self.id, "reason": intr.reason})
            )
            ctx._call(
                self.store.release,
                task.id,
                token,
                status="paused" if intr.action == "pause" else "queued",
                draft=draft,
                usage=usage,
                consume_steering=consume,
            )

    def _finish(
        self,
        task: TaskRow,
        token: str,
        status: str,
        result: Any,
        error: dict[str, Any] | None,
        usage: dict[str, float],
        ctx: StepContext | None = None,
        consume: list[int] | None = None,
    ) -> None:
        stored = _jsonable(result)
        # the terminal receipt commits to the stored result, so verify can check it later
        payload: dict[str, Any] = {
            "worker": self.id,
            "result_sha256": sha256_json(stored),
            "usage": usage,
        }
        if error is not None:
            payload["error"] = error
        if consume:
            payload["steering_id"] = consume[0]
        call = ctx._call if ctx is not None else _direct
        idle = self._idle_after()
        if idle is not None:
            # marked first: a claim's notification may arrive before the finish returns
            self._registered_at = time.monotonic()
        try:
            looked = call(
                self.store.finish,
                task.id,
                token,
                status=status,
                result=stored,
                error=error,
                usage=usage,
                draft=Draft(status, payload),
                consume_steering=consume or (),
                head=self._head(task),
                idle=idle,
            )
        except BaseException:
            if idle is not None:
                self._registered_at = None  # not known to be registered: the loop registers
            raise
        if looked:
            self._found = True  # work waited at the look: lease it next, no look first
        elif looked is False:
            self._looked_idle = True

    def _idle_after(self) -> IdleAfter | None:
        """Whether the task now ending leaves this worker idle with nothing known to wait (so
        its end registers it and looks for work once more, in the same round trip)."""
        if self._found or self._ready or self._signalled is not None:
            return None
        if not self._listening.is_set() or self.draining.is_set():
            return None
        m = self.settings.max_tasks
        if m is not None and self.completed + self._active() >= m:
            return None  # this worker stops after it
        at = self._registered_at
        if at is not None and time.monotonic() - at < STALE_S / 4:
            return None  # registered, and recently
        return IdleAfter(self.id, self.settings.queues, self.registry.names())

    def _head(self, task: TaskRow) -> tuple[int, str] | None:
        """The task's chain head as this worker last left it: the lease's, or a later receipt
        this thread sealed since (a step's). A guess the store checks: when anyone else moved
        the head meanwhile, the end reads it first."""
        head = (task.head_seq, task.head_hash) if task.head_hash else None
        last_sealed = getattr(self.store.sealer, "last_sealed", None)
        mine = last_sealed(task.id) if last_sealed is not None else None
        if mine is not None and (head is None or mine[0] > head[0]):
            head = (int(mine[0]), str(mine[1]))
        return head

    # -- the ticker --------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        s = self.settings
        tick = max(0.05, min(s.heartbeat_interval, s.steer_poll_s))
        next_beat = time.monotonic() + s.heartbeat_interval
        next_steer = 0.0
        quiet_until = 0.0
        while not self._stopped.is_set():
            announced = self._poll_now.wait(tick)
            self._poll_now.clear()
            if self._stopped.is_set():
                return
            with self._lock:
                running = dict(self._running)
            if not running:
                continue
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + s.heartbeat_interval
                    lost = self.store.heartbeat(
                        {k: v.token for k, v in running.items()}, s.lease_ttl_s
                    )
                    for tid in lost:
                        ctx = running[tid].ctx
                        if ctx is not None:
                            ctx.lose_lease()
                        else:
                            running[tid].lost = True
                # with steering announced (LISTEN), poll for it only as a fallback
                if announced or not self._listening.is_set() or time.monotonic() >= next_steer:
                    next_steer = time.monotonic() + s.notify_poll_s
                    rows = self.store.pending_steering(list(running))
                else:
                    rows = []
                for row in rows:
                    ctx = running[row.task_id].ctx
                    if ctx is not None:
                        # a stop or pause a receipt sent cancels work in flight
                        ctx.notify_steering(row.kind, row)
                    else:  # prefetched: it reads its steering afresh when it starts
                        running[row.task_id].steered = True
                self._give_back_stale()
            except RetryableFailure as exc:
                quiet_until = self._log_once("ticker", quiet_until, exc.message)
            except Exception:
                log.exception("ticker error")
            for entry in running.values():
                ctx = entry.ctx
                if ctx is not None and ctx.budget.exhausted() == "wall_s":
                    ctx.cancel.cancel("wall-clock budget exhausted")

    @staticmethod
    def _log_once(where: str, quiet_until: float, message: str) -> float:
        """Log a store outage at most every 10 s, so a long outage cannot flood the log."""
        now = time.monotonic()
        if now < quiet_until:
            return quiet_until
        log.warning("%s: store error, retrying: %s", where, message)
        return now + 10.0

    def _start_listener(self) -> threading.Thread | None:
        if not self.store.notifies:
            return None
        listen = self.store.listen
        queues = self.settings.queues
        mine = self.store.worker_channel(self.id)

        waits = [math.inf]  # when the listener's current doorbell wait began (monotonic)

        def claimed() -> None:  # a submit claimed this worker's registration for its task
            self._registered_at = None
            self._claimed = True
            self._looked_idle = False
            self._wake.set()

        def on_notify(channel: str, payload: str) -> None:
            if channel == mine:
                claimed()
            elif channel == RANG:  # the doorbell: a submit's claim, or steering for a task here
                waits[0] = time.monotonic()
                if self._registered_at is not None:
                    claimed()
                self._wake.set()
                self._poll_now.set()
            elif channel == WAITED:
                began, waits[0] = waits[0], time.monotonic()
                at = self._registered_at
                if payload == "absent" and at is not None and at < began:
                    # registered before that wait began, gone by then: a submit claimed it and
                    # its ring fell between two waits (the server drops such a cancel)
                    claimed()
            elif channel == TASKS_CHANNEL:
                if wakes(
                    payload, queues, self.registry.names()
                ):  # only work this worker could lease
                    self._looked_idle = False
                    self._wake.set()
            elif channel == STEERING_CHANNEL:
                self._poll_now.set()
            else:  # (re)connected: anything announced meanwhile was missed, so look once
                waits[0] = time.monotonic()
                self._looked_idle = False
                self._wake.set()
                self._poll_now.set()

        t = threading.Thread(
            target=listen,
            args=(
                (TASKS_CHANNEL, STEERING_CHANNEL, mine),
                on_notify,
                self._stopped,
                self._listening,
                self.id,
            ),
            name="holdfast-listen",
            daemon=True,
        )
        t.start()
        return t


def _positive(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )


def _direct(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _error(exc: BaseException) -> dict[str, Any]:
    return {"code": "runner_error", "type": type(exc).__name__, "message": str(exc)}


def _jsonable(value: Any) -> Any:
    try:
        canonical_json(value)
    except (TypeError, ValueError):
        return {"unserializable": repr(value)[:2000]}
    return value
