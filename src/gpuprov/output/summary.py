"""What frames a run for a person, the same in every format: the header (what
runs where), the roles a host never got to and why, and the summary line (the
counts, and the exit code with its word).

The recap (report.py) and drift-check's table, JSON and Prometheus formats
(drift.py) all count with the functions here, so they cannot disagree. The
exit code itself is the cli's (cli/exit_codes.py): it arrives as an Outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from gpuprov.engine.results import (
    CHANGED,
    CONDITION,
    FAILED,
    OK,
    UNREACHABLE,
    Change,
    HostResult,
    RunResult,
    TaskResult,
)

IN_SYNC, DRIFT = "in_sync", "drift"


@dataclass(frozen=True)
class Outcome:
    """A run's exit code and its word (cli/exit_codes.py decides both)."""

    code: int
    status: str      # ok | in_sync | drift | failed | unreachable | error | interrupted

    def text(self) -> str:
        return f"exit {self.code} ({self.status.replace('_', ' ')})"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# -- drift ------------------------------------------------------------------------

def drifted(host: HostResult) -> list[tuple[TaskResult, Change]]:
    """The differing resources of a host, with the task that found each.

    Handlers notified by this run's changes are consequences, not drift of
    their own; a handler left pending by an earlier run is.
    """
    return [(t, c) for t in host.tasks if t.status == CHANGED
            and (not t.handler or t.pending) for c in t.changes]


def host_drift_status(host: HostResult) -> str:
    """A host that could not be checked is never in sync: unreachable, failed
    (whatever drift it found before), drift, in_sync."""
    if host.unreachable:
        return UNREACHABLE
    if host.failed:
        return FAILED
    return DRIFT if drifted(host) else IN_SYNC


# -- counts -----------------------------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """Hosts by outcome. drift-check: `ok` in sync, `changed` drifted, `resources`
    the resources that differ on the drifted hosts; apply: `ok` nothing changed,
    `resources` the tasks that changed something."""

    hosts: int
    ok: int
    changed: int
    resources: int
    failed: int
    unreachable: int


def drift_counts(run: RunResult) -> Counts:
    statuses = [host_drift_status(h) for h in run.hosts.values()]
    return Counts(len(statuses), statuses.count(IN_SYNC), statuses.count(DRIFT),
                  sum(len(drifted(h)) for h in run.hosts.values()
                      if host_drift_status(h) == DRIFT),
                  statuses.count(FAILED), statuses.count(UNREACHABLE))


def apply_counts(run: RunResult) -> Counts:
    statuses = [h.status for h in run.hosts.values()]
    return Counts(len(statuses), statuses.count(OK), statuses.count(CHANGED),
                  sum(h.changed for h in run.hosts.values() if h.status == CHANGED),
                  statuses.count(FAILED), statuses.count(UNREACHABLE))


def summary_line(run: RunResult, outcome: Outcome | None, drift: bool = False) -> str:
    """'2 hosts: 1 in sync, 1 drifted (7 resources), 0 failed, 0 unreachable ->
    exit 3 (drift)'; apply's says ok/changed (tasks) and how long it took."""
    c = drift_counts(run) if drift else apply_counts(run)
    if not c.hosts:
        line = "no hosts checked" if drift else "no hosts run"
    else:
        ok, changed, unit = ("in sync", "drifted", "resource") if drift else ("ok", "changed",
                                                                            "task")
        line = (f"{plural(c.hosts, 'host')}: {c.ok} {ok}, {c.changed} {changed}"
                + (f" ({plural(c.resources, unit)})" if c.changed else "")
                + f", {c.failed} failed, {c.unreachable} unreachable")
    if not drift and run.finished:
        line += f" in {max(run.finished - run.started, 0.0):.1f}s"
    return line + (f" -> {outcome.text()}" if outcome is not None else "")


# -- header -----------------------------------------------------------------------

def header_line(command: str, playbook: str, roles: Sequence[str], tags: Sequence[str],
                skip_tags: Sequence[str], hosts: int) -> str:
    """'drift-check playbooks/site.yml: roles base, nouveau (tags: gpu) on 3 hosts'."""
    line = f"{command} {playbook}: roles {', '.join(roles) or '(none)'}"
    if tags:
        line += f" (tags: {', '.join(tags)})"
    if skip_tags:
        line += f" (skip-tags: {', '.join(skip_tags)})"
    return f"{line} on {plural(hosts, 'host')}"


# -- roles not reached --------------------------------------------------------------

def not_reached_text(host: HostResult) -> str:
    """'container_toolkit, gpu_image (an earlier failure in nvidia_driver);
    sshd_hardening (skipped: no sshd installed)': the host's roles it never got
    to, grouped by why; '' when it got to every role."""
    groups: dict[str, list[str]] = {}
    for note in host.not_reached():
        why = f"skipped: {note.why}" if note.kind == CONDITION else note.why
        groups.setdefault(why, []).append(note.role)
    return "; ".join(f"{', '.join(roles)} ({why})" for why, roles in groups.items())


def not_reached_lines(run: RunResult) -> list[str]:
    """One line per set of hosts that missed the same roles for the same reasons
    ('not reached on h1, h2: ...'), so a fleet run tagged `-t driver` says it once."""
    by_text: dict[str, list[str]] = {}
    for h in run.hosts.values():
        text = not_reached_text(h)
        if text:
            by_text.setdefault(text, []).append(h.host)
    return [f"not reached on {', '.join(hosts)}: {text}" for text, hosts in by_text.items()]


def render_summary(run: RunResult, console: Console, outcome: Outcome | None = None,
                   drift: bool = False) -> None:
    """The end of every run's output: the roles not reached, then the summary line."""
    for line in not_reached_lines(run):
        head, _, rest = line.partition(": ")
        console.print(Text.assemble((head, "yellow"), ": ", rest), soft_wrap=True,
                      highlight=False)
    code = outcome.code if outcome is not None else 0
    style = "" if code == 0 else "bold yellow" if code == 3 else "bold red"
    console.print(Text(summary_line(run, outcome, drift), style=style), soft_wrap=True,
                  highlight=False)
