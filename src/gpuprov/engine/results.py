"""What a run found and did, per host and per task: the input of reports.

Change (one differing resource, with its diff) is part of this API: the
output layer renders results and never reaches down to ops/ for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpuprov.ops.base import Change

__all__ = [
    "CHANGED",
    "FAILED",
    "OK",
    "SKIPPED",
    "UNREACHABLE",
    "Change",
    "HostResult",
    "RunResult",
    "TaskResult",
]

OK, CHANGED, FAILED, SKIPPED, UNREACHABLE = "ok", "changed", "failed", "skipped", "unreachable"


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
