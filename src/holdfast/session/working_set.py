"""The working set: what a long task must never forget, kept on every turn.

The working set is the structured state of one task (goal with status and completion criteria,
constraints, decisions with rationale, tracked files, blockers, progress, next step, findings). It
is not written at roll-over time from a transcript; every change is an *operation* with a version
number, applied the moment it happens and handed to a sink (the session store) so that it is
durable before the turn goes on. The state is the fold of its operations, which makes it
replayable, auditable and mergeable:

* scalar fields (goal text, goal status, criteria, next step, a blocker's resolution, a file's
  last action) are last-write-wins by version, so applying the same operations in any order gives
  the same state;
* items are added by id and never removed; a decision leaves the set of live decisions only when a
  later decision names it in ``supersedes``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, cast

from holdfast.errors import InvalidInput

GoalStatus = Literal["active", "done", "blocked", "abandoned"]
GOAL_STATUSES: tuple[str, ...] = ("active", "done", "blocked", "abandoned")
Op = dict[str, Any]
OpSink = Callable[[Op], None]


@dataclass(frozen=True)
class Constraint:
    id: str
    text: str
    v: int


@dataclass(frozen=True)
class Decision:
    id: str
    text: str
    rationale: str
    supersedes: tuple[str, ...]
    v: int
    superseded_by: str | None = None

    @property
    def live(self) -> bool:
        return self.superseded_by is None


@dataclass(frozen=True)
class TrackedFile:
    path: str
    action: str
    note: str
    v: int


@dataclass(frozen=True)
class Blocker:
    id: str
    text: str
    v: int
    resolved: bool = False
    resolution: str = ""
    resolved_v: int = 0


@dataclass(frozen=True)
class ProgressEntry:
    id: str
    text: str
    v: int


@dataclass(frozen=True)
class Finding:
    id: str
    text: str
    v: int
    trace_id: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class _Stamped:
    value: Any
    v: int


class WorkingSet:
    """A task's working set. Mutators return the new item's id (where there is one)."""

    def __init__(self, sink: OpSink | None = None) -> None:
        self._sink = sink
        self.version = 0
        self.op_key: str | None = None
        """When set, tags the next operation with this idempotency key (then clears)."""
        self._fields: dict[str, _Stamped] = {
            "goal": _Stamped("", 0),
            "status": _Stamped("active", 0),
            "criteria": _Stamped((), 0),
            "next_step": _Stamped("", 0),
        }
        self.constraints: dict[str, Constraint] = {}
        self.decisions: dict[str, Decision] = {}
        self.files: dict[str, TrackedFile] = {}
        self.blockers: dict[str, Blocker] = {}
        self.progress: dict[str, ProgressEntry] = {}
        self.findings: dict[str, Finding] = {}

    # -- reading --------------------------------------------------------------------------------

    @property
    def goal(self) -> str:
        return str(self._fields["goal"].value)

    @property
    def status(self) -> str:
        return str(self._fields["status"].value)

    @property
    def criteria(self) -> tuple[str, ...]:
        return tuple(self._fields["criteria"].value)

    @property
    def next_step(self) -> str:
        return str(self._fields["next_step"].value)

    def live_decisions(self) -> list[Decision]:
        return [d for d in self.decisions.values() if d.live]

    def open_blockers(self) -> list[Blocker]:
        return [b for b in self.blockers.values() if not b.resolved]

    def item_text(self, item_id: str) -> str | None:
        """The full text of one item by id (``c1``, ``d2``, ``b1``, ``p7``, ``f3``), or None."""
        for table in (self.constraints, self.decisions, self.blockers, self.progress):
            item = table.get(item_id)
            if item is not None:
                return json.dumps(asdict(item), sort_keys=True)
        finding = self.findings.get(item_id)
        return json.dumps(asdict(finding), sort_keys=True) if finding else None

    # -- mutators (each one is an operation) -----------------------------------------------------

    def set_goal(self, text: str, criteria: Iterable[str] | None = None) -> None:
        """Set the goal and, when given, its completion criteria (one operation)."""
        if criteria is None:
            self._emit("set_goal", text=_need_text(text, "goal"))
        else:
            checked = [_need_text(c, "criterion") for c in criteria]
            self._emit("set_goal", text=_need_text(text, "goal"), criteria=checked)

    def set_criteria(self, criteria: Iterable[str]) -> None:
        self._emit("set_criteria", criteria=[_need_text(c, "criterion") for c in criteria])

    def set_status(self, status: str) -> None:
        if status not in GOAL_STATUSES:
            raise InvalidInput(
                f"goal status must be one of {', '.join(GOAL_STATUSES)}, not {status!r}"
            )
        self._emit("set_status", status=status)

    def set_next_step(self, text: str) -> None:
        self._emit("set_next_step", text=_need_text(text, "next step"))

    def add_constraint(self, text: str) -> str:
        item_id = f"c{len(self.constraints) + 1}"
        self._emit("add_constraint", id=item_id, text=_need_text(text, "constraint"))
        return item_id

    def record_decision(
        self, text: str, rationale: str, supersedes: Iterable[str] | None = None
    ) -> str:
        """Record a decision; ``supersedes`` names the live decisions it replaces."""
        old = list(dict.fromkeys(supersedes or ()))
        for did in old:
            prev = self.decisions.get(did)
            if prev is None:
                raise InvalidInput(f"cannot supersede {did!r}: no such decision")
            if not prev.live:
                raise InvalidInput(
                    f"cannot supersede {did!r}: already superseded by {prev.superseded_by}"
                )
        item_id = f"d{len(self.decisions) + 1}"
        self._emit(
            "record_decision",
            id=item_id,
            text=_need_text(text, "decision"),
            rationale=_need_text(rationale, "rationale"),
            supersedes=old,
        )
        return item_id

    def track_file(self, path: str, action: str, note: str = "") -> None:
        self._emit("track_file", path=_need_text(path, "path"), action=action, note=note)

    def add_blocker(self, text: str) -> str:
        item_id = f"b{len(self.blockers) + 1}"
        self._emit("add_blocker", id=item_id, text=_need_text(text, "blocker"))
        return item_id

    def resolve_blocker(self, blocker_id: str, resolution: str) -> None:
        if blocker_id not in self.blockers:
            raise InvalidInput(f"no blocker {blocker_id!r}")
        self._emit("resolve_blocker", id=blocker_id, resolution=resolution)

    def record_progress(self, text: str) -> str:
        item_id = f"p{len(self.progress) + 1}"
        self._emit("record_progress", id=item_id, text=_need_text(text, "progress"))
        return item_id

    def add_finding(
        self, text: str, *, trace_id: str | None = None, source: str | None = None
    ) -> str:
        item_id = f"f{len(self.findings) + 1}"
        self._emit(
            "add_finding",
            id=item_id,
            text=_need_text(text, "finding"),
            trace_id=trace_id,
            source=source,
        )
        return item_id

    # -- operations -------------------------------------------------------------------------------

    def _emit(self, name: str, **args: Any) -> None:
        op: Op = {"v": self.version + 1, "op": name, "args": args}
        if self.op_key is not None:
            op["key"] = self.op_key
            self.op_key = None
        if self._sink is not None:
            self._sink(op)
        self.apply(op)

    def apply(self, op: Op) -> None:
        """Fold one operation into the state (idempotent; scalar fields last-write-wins)."""
        v = int(op["v"])
        a = op["args"]
        name = op["op"]
        if name == "set_goal" and "criteria" in a and v > self._fields["criteria"].v:
            self._fields["criteria"] = _Stamped(tuple(a["criteria"]), v)
        if name in ("set_goal", "set_status", "set_next_step", "set_criteria"):
            key = {"set_goal": "goal", "set_status": "status", "set_next_step": "next_step"}.get(
                name, "criteria"
            )
            value = tuple(a["criteria"]) if key == "criteria" else a.get("text", a.get("status"))
            if v > self._fields[key].v:
                self._fields[key] = _Stamped(value, v)
        elif name == "add_constraint":
            self.constraints.setdefault(a["id"], Constraint(a["id"], a["text"], v))
        elif name == "record_decision":
            if a["id"] not in self.decisions:
                self.decisions[a["id"]] = Decision(
                    a["id"], a["text"], a["rationale"], tuple(a["supersedes"]), v
                )
            for old in a["supersedes"]:
                prev = self.decisions.get(old)
                if prev is not None and prev.superseded_by is None:
                    self.decisions[old] = replace(prev, superseded_by=a["id"])
        elif name == "track_file":
            prev_file = self.files.get(a["path"])
            if prev_file is None or v > prev_file.v:
                self.files[a["path"]] = TrackedFile(a["path"], a["action"], a["note"], v)
        elif name == "add_blocker":
            self.blockers.setdefault(a["id"], Blocker(a["id"], a["text"], v))
        elif name == "resolve_blocker":
            blocker = self.blockers.get(a["id"])
            if blocker is not None and v > blocker.resolved_v:
                self.blockers[a["id"]] = replace(
                    blocker, resolved=True, resolution=a["resolution"], resolved_v=v
                )
        elif name == "record_progress":
            self.progress.setdefault(a["id"], ProgressEntry(a["id"], a["text"], v))
        elif name == "add_finding":
            self.findings.setdefault(
                a["id"], Finding(a["id"], a["text"], v, a.get("trace_id"), a.get("source"))
            )
        else:
            raise InvalidInput(f"unknown working-set operation {name!r}")
        self.version = max(self.version, v)

    @classmethod
    def replay(cls, ops: Iterable[Op], sink: OpSink | None = None) -> WorkingSet:
        """Rebuild a working set from its operations (in version order)."""
        ws = cls()
        for op in sorted(ops, key=lambda o: int(o["v"])):
            ws.apply(op)
        ws._sink = sink
        return ws

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot of the whole state (including field versions)."""
        return {
            "version": self.version,
            "fields": {k: {"value": _jsonable(s.value), "v": s.v} for k, s in self._fields.items()},
            "constraints": _by_version(self.constraints.values()),
            "decisions": _by_version(self.decisions.values()),
            "files": _by_version(self.files.values()),
            "blockers": _by_version(self.blockers.values()),
            "progress": _by_version(self.progress.values()),
            "findings": _by_version(self.findings.values()),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], sink: OpSink | None = None) -> WorkingSet:
        ws = cls(sink)
        ws.version = int(data["version"])
        for key, stamped in data["fields"].items():
            value = tuple(stamped["value"]) if key == "criteria" else stamped["value"]
            ws._fields[key] = _Stamped(value, int(stamped["v"]))
        ws.constraints = {c["id"]: Constraint(**c) for c in data["constraints"]}
        ws.decisions = {
            d["id"]: Decision(**{**d, "supersedes": tuple(d["supersedes"])})
            for d in data["decisions"]
        }
        ws.files = {f["path"]: TrackedFile(**f) for f in data["files"]}
        ws.blockers = {b["id"]: Blocker(**b) for b in data["blockers"]}
        ws.progress = {p["id"]: ProgressEntry(**p) for p in data["progress"]}
        ws.findings = {f["id"]: Finding(**f) for f in data["findings"]}
        return ws

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkingSet) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _by_version(items: Iterable[Any]) -> list[dict[str, Any]]:
    return [asdict(i) for i in sorted(items, key=lambda i: i.v)]


def _need_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"the {what} must be a non-empty string")
    return value.strip()


def _jsonable(value: Any) -> Any:
    return list(cast(tuple[str, ...], value)) if isinstance(value, tuple) else value
