"""What a run found and did, per host and per task: the input of reports.

Change (one differing resource, with its diff) is part of this API: the
output layer renders results and never reaches down to ops/ for it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuprov.command import mask_text
from gpuprov.ops.base import Change

__all__ = [
    "CHANGED",
    "mask_json",
    "FAILED",
    "OK",
    "SKIPPED",
    "UNREACHABLE",
    "Change",
    "HostResult",
    "RoleNote",
    "RunResult",
    "TaskResult",
    "phase",
]

OK, CHANGED, FAILED, SKIPPED, UNREACHABLE = "ok", "changed", "failed", "skipped", "unreachable"

#: why a role did not run on a host (RoleNote.kind): the host stopped before it
#: (a failure, unreachable, the run aborted), the role's own condition
#: (`raise ctx.skip(why)`, a verification play with nothing to verify), or tags
STOPPED, CONDITION, TAGS = "stopped", "condition", "tags"


@dataclass(frozen=True)
class RoleNote:
    """A role of the run that did not run on a host, and why."""

    role: str
    play: str
    why: str      # "an earlier failure in nvidia_driver", "no sshd installed", ...
    kind: str     # STOPPED | CONDITION | TAGS

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "play": self.play, "why": self.why, "kind": self.kind}


@dataclass
class TaskResult:
    role: str
    task: str                      # the op's label
    status: str                    # ok | changed | failed | skipped
    changes: list[Change] = field(default_factory=list)
    error: str | None = None
    handler: bool = False
    #: a handler whose notification an earlier run left pending on the host
    pending: bool = False
    #: what the op found (Op.report), e.g. the GPU table of verify
    data: dict[str, Any] | None = None

    def mask(self, secrets: set[str]) -> None:
        """Replace every known secret value in what this result shows (the last
        line of defence: a value that reached an error or a diff unmarked)."""
        if not secrets:
            return
        self.task = mask_text(self.task, secrets)
        self.error = mask_text(self.error, secrets) if self.error else self.error
        self.data = mask_json(self.data, secrets)
        self.changes = [_mask_change(c, secrets) for c in self.changes]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "task": self.task, "status": self.status}
        if self.handler:
            data["handler"] = True
        if self.pending:
            data["pending_from_earlier_run"] = True
        if self.changes:
            data["changes"] = [c.to_json() for c in self.changes]
        if self.error:
            data["error"] = self.error
        if self.data is not None:
            data["data"] = self.data
        return data


@dataclass
class HostResult:
    host: str
    tasks: list[TaskResult] = field(default_factory=list)
    unreachable: str | None = None   # the reason, when the host could not be reached
    error: str | None = None         # a failure that stopped this host
    reboot_pending: bool = False
    rebooted: bool = False
    connections: int = 0
    round_trips: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: where the host's time went, in order: {"phase": connect|lock|facts|plan|step,
    #: "play", "seconds", "why", and for facts "count" and "slowest" (-v: [key, seconds])}
    profile: list[dict[str, Any]] = field(default_factory=list)
    #: the host's known secret values (its secret variables, -K): masked in
    #: everything shown or written about it (mask(), to_json())
    secrets: set[str] = field(default_factory=set, repr=False, compare=False)
    #: roles the host got to, in any play (their tasks ran, or had nothing to do)
    reached: set[str] = field(default_factory=set)
    #: roles left out on the host and why, in play order (not_reached() is what is shown)
    notes: list[RoleNote] = field(default_factory=list)
    #: why the host stopped (the reason the roles after that point did not run)
    stopped: str | None = None

    def note(self, play: str, roles: Iterable[str], why: str, kind: str) -> None:
        self.notes.extend(RoleNote(role, play, why, kind) for role in roles)

    def task_notes(self) -> list[str]:
        """The notes ops reported (`note` in Op.report's data, e.g. k8s_node's
        "kubelet not installed"): news for the operator, neither change nor failure."""
        return [f"{t.role}: {t.data['note']}" for t in self.tasks
                if t.data is not None and isinstance(t.data.get("note"), str)]

    def not_reached(self) -> list[RoleNote]:
        """Each role the host got to in no play, once, with its first reason (a
        role listed again in a later play for its defaults is no news)."""
        seen, out = set(self.reached), []
        for n in self.notes:
            if n.role not in seen:
                seen.add(n.role)
                out.append(n)
        return out

    def settle(self, play: str, roles: Sequence[str], skips: Mapping[str, str],
               finished: bool, failing: str | None = None) -> None:
        """What one play's roles came to on this host. `skips`: roles their own
        condition left out (role -> why). Unless `finished`, the host stopped:
        at its failed task, or with `failing`, a role whose tasks() failed
        before any task ran, or where it became unreachable; the roles it had
        not got to by then were not reached."""
        failed = next((t.role for t in self.tasks if t.status == FAILED), None)
        ran = [t.role for t in self.tasks if t.status != SKIPPED and t.role in roles]
        where = failed if failed in roles else ran[-1] if ran else None
        stop = len(roles) if finished else roles.index(where) + 1 if where else 0
        self.notes.extend(RoleNote(r, play, skips[r], CONDITION) for r in roles if r in skips)
        self.reached.update(r for r in roles[:stop] if r not in skips)
        self.reached.update([failing] if failing else [])   # it failed: the cause, named
        if finished:
            return
        why = None
        if self.unreachable:
            why = self.stopped = "the host became unreachable"
        elif failed or failing:
            self.stopped = f"an earlier failure in {failed or failing}"
            why = None if failed else f"{failing} failed before any task ran"
        else:
            self.stopped = "an earlier failure"
        self.note(play, [r for r in roles[stop:] if r not in skips and r not in self.reached],
                  why or self.stopped, STOPPED)

    def mask(self) -> None:
        """Mask the known secret values in this result, in place, before any
        output sees it."""
        if not self.secrets:
            return
        for task in self.tasks:
            task.mask(self.secrets)
        self.error = mask_text(self.error, self.secrets) if self.error else self.error
        self.unreachable = (mask_text(self.unreachable, self.secrets) if self.unreachable
                            else self.unreachable)
        self.warnings = [mask_text(w, self.secrets) for w in self.warnings]

    def add(self, part: HostResult) -> None:
        """Add one play's result for the host to this, its whole-run result."""
        self.tasks.extend(part.tasks)
        self.unreachable = self.unreachable or part.unreachable
        self.error = self.error or part.error
        self.reboot_pending = part.reboot_pending or (self.reboot_pending and not part.rebooted)
        self.rebooted = self.rebooted or part.rebooted
        # Connection stats are cumulative per connector, which lives for the whole run.
        self.connections = max(self.connections, part.connections)
        self.round_trips = max(self.round_trips, part.round_trips)
        self.seconds += part.seconds
        self.warnings.extend(part.warnings)
        self.profile.extend(part.profile)
        self.secrets |= part.secrets
        self.reached |= part.reached
        self.notes.extend(part.notes)
        self.stopped = self.stopped or part.stopped

    def count(self, status: str) -> int:
        return sum(1 for t in self.tasks if t.status == status)

    @property
    def changed(self) -> int:
        return self.count(CHANGED)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.count(FAILED) > 0

    @property
    def status(self) -> str:
        if self.unreachable:
            return UNREACHABLE
        if self.failed:
            return FAILED
        return CHANGED if self.changed else OK

    def to_json(self) -> dict[str, Any]:
        return mask_json(self._json(), self.secrets)

    def _json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": self.status,
            "ok": self.count(OK),
            "changed": self.changed,
            "failed": self.count(FAILED) + (1 if self.error and not self.unreachable else 0),
            "skipped": self.count(SKIPPED),
            "unreachable": self.unreachable,
            "error": self.error,
            "reboot_pending": self.reboot_pending,
            "rebooted": self.rebooted,
            "connections": self.connections,
            "round_trips": self.round_trips,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
            "profile": self.profile,
            "not_reached": [n.to_json() for n in self.not_reached()],
            "tasks": [t.to_json() for t in self.tasks],
        }


@dataclass
class RunResult:
    """A whole run: one HostResult per host (tasks of every play, in order)."""

    command: str                   # apply | check | drift-check
    check: bool
    hosts: dict[str, HostResult] = field(default_factory=dict)
    started: float = 0.0           # time.time()
    finished: float = 0.0
    aborted: str | None = None     # why the run stopped early (max-fail reached)

    def host(self, name: str) -> HostResult:
        if name not in self.hosts:
            self.hosts[name] = HostResult(name)
        return self.hosts[name]

    @property
    def any_failed(self) -> bool:
        return any(h.failed and not h.unreachable for h in self.hosts.values())

    @property
    def any_unreachable(self) -> bool:
        return any(h.unreachable for h in self.hosts.values())

    @property
    def any_changed(self) -> bool:
        return any(h.changed for h in self.hosts.values())

    def secret_values(self) -> set[str]:
        """Every host's known secret values: what no output may contain."""
        return {v for h in self.hosts.values() for v in h.secrets}

    def to_json(self) -> dict[str, Any]:
        hosts = [h.to_json() for h in self.hosts.values()]
        return {
            "command": self.command,
            "check": self.check,
            "started": self.started,
            "finished": self.finished,
            "aborted": self.aborted,
            "summary": {
                "hosts": len(hosts),
                "changed": sum(1 for h in self.hosts.values() if h.changed),
                "failed": sum(1 for h in self.hosts.values()
                              if h.failed and not h.unreachable),
                "unreachable": sum(1 for h in self.hosts.values() if h.unreachable),
                "reboot_pending": sum(1 for h in self.hosts.values() if h.reboot_pending),
            },
            "hosts": hosts,
        }


def mask_json(data: Any, secrets: set[str]) -> Any:
    """JSON-like data with every known secret value masked in its strings
    (before json.dumps: an escaped value would no longer match)."""
    if not secrets:
        return data
    if isinstance(data, str):
        return mask_text(data, secrets)
    if isinstance(data, dict):
        return {mask_json(k, secrets): mask_json(v, secrets) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask_json(v, secrets) for v in data]
    return data


def _mask_change(change: Change, secrets: set[str]) -> Change:
    diff = change.diff
    if diff is not None and not diff.secret:
        before = mask_text(diff.before, secrets) if diff.before is not None else None
        after = mask_text(diff.after, secrets) if diff.after is not None else None
        diff = dataclasses.replace(diff, label=mask_text(diff.label, secrets), before=before,
                                   after=after)
    return dataclasses.replace(
        change, resource=mask_text(change.resource, secrets),
        summary=mask_text(change.summary, secrets), diff=diff,
        unknown=mask_text(change.unknown, secrets) if change.unknown else change.unknown,
        blocked=mask_text(change.blocked, secrets) if change.blocked else change.blocked)


def phase(name: str, started: float, play: str, why: str = "") -> dict[str, Any]:
    """A profile entry (HostResult.profile) for a phase that began at `started`
    (time.monotonic())."""
    return {"phase": name, "play": play, "seconds": round(time.monotonic() - started, 4),
            "why": why}
