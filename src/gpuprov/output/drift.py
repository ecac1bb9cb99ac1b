"""drift-check output: a table for people, JSON for CI, Prometheus textfile for monitoring.

Input is a check-mode RunResult: a task with status `changed` is drift, and
its Changes are the resources that differ. A host that could not be checked
(unreachable, failed) is never reported as in sync: drift-check must not
claim a fleet is fine when it did not look.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.text import Text

from gpuprov.engine.results import CHANGED, Change, HostResult, RunResult, TaskResult, mask_json
from gpuprov.output.report import host_errors, indent

IN_SYNC, DRIFT, UNREACHABLE, FAILED = "in_sync", "drift", "unreachable", "failed"


def drifted(host: HostResult) -> list[tuple[TaskResult, Change]]:
    """The differing resources of a host, with the task that found each.

    Handlers notified by this run's changes are consequences, not drift of
    their own; a handler left pending by an earlier run is.
    """
    return [(t, c) for t in host.tasks if t.status == CHANGED
            and (not t.handler or t.pending) for c in t.changes]


def host_drift_status(host: HostResult) -> str:
    if host.unreachable:
        return UNREACHABLE
    if host.failed:
        return FAILED
    return DRIFT if drifted(host) else IN_SYNC


def _error(host: HostResult) -> str | None:
    if host.unreachable:
        return None
    return "\n".join(host_errors(host)) or None


# -- table ------------------------------------------------------------------------

def drift_table(run: RunResult, console: Console) -> None:
    """One status line per host, then its drifting resources, then a summary."""
    width = max((len(name) for name in run.hosts), default=0)
    statuses: list[str] = []
    for h in run.hosts.values():
        status = host_drift_status(h)
        statuses.append(status)
        items = drifted(h)
        line = Text(h.host.ljust(width) + "  ", style="bold")
        if status == UNREACHABLE:
            first, _, rest = (h.unreachable or "").partition("\n")
            line.append(f"unreachable: {first}", style="bold red")
        elif status == FAILED:
            first, _, rest = (_error(h) or "").partition("\n")
            line.append(f"failed: {first}", style="bold red")
        elif status == DRIFT:
            rest = ""
            noun = "resource" if len(items) == 1 else "resources"
            line.append(f"DRIFT {len(items)} {noun}", style="bold yellow")
        else:
            rest = ""
            line.append("in sync", style="green")
        if h.reboot_pending:
            line.append(", reboot pending", style="bold magenta")
        if rest:
            line.append("\n" + indent(rest, " " * (width + 4)))
        for _task, change in items:
            entry = f"{change.resource} — {change.summary}"
            if change.unknown:
                entry += f" (unknown: {change.unknown})"
            line.append("\n" + " " * (width + 4) + entry)
        console.print(line, soft_wrap=True, highlight=False)
    counts = {s: statuses.count(s) for s in (IN_SYNC, DRIFT, UNREACHABLE, FAILED)}
    noun = "host" if len(statuses) == 1 else "hosts"
    summary = f"{len(statuses)} {noun}: " + ", ".join(
        f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n)
    console.print(Text(summary if statuses else "no hosts checked"), soft_wrap=True)


def drift_table_text(run: RunResult, width: int = 120) -> str:
    """drift_table as plain text, for `--output FILE` (with write_text_atomic)."""
    buf = io.StringIO()
    drift_table(run, Console(file=buf, force_terminal=False, width=width))
    return buf.getvalue()


# -- JSON -------------------------------------------------------------------------

def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def drift_data(run: RunResult) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    for h in run.hosts.values():
        entries = []
        for task, change in drifted(h):
            entry: dict[str, Any] = {"role": task.role, "task": task.task,
                                     "resource": change.resource, "action": change.action,
                                     "summary": change.summary}
            if change.unknown:
                entry["unknown"] = change.unknown
            if change.diff is not None:
                entry["diff"] = change.diff.unified()   # masks secret content
            entries.append(entry)
        hosts[h.host] = {
            "status": host_drift_status(h),
            "drift": entries,
            "reboot_pending": h.reboot_pending,
            "error": _error(h),
            "unreachable": h.unreachable,
            # what the check cost (benchmarks/ reads these; apply's --report has them too)
            "connections": h.connections,
            "round_trips": h.round_trips,
            "profile": h.profile,
        }
    return {
        "in_sync": all(v["status"] == IN_SYNC for v in hosts.values()),
        # already masked by the engine; again here, as this file leaves the controller
        "hosts": mask_json(hosts, run.secret_values()),
        "checked_at": _iso(run.finished or time.time()),
    }


def drift_json(run: RunResult) -> str:
    """`--format json`: `in_sync` is true only if every host was checked and matched."""
    return json.dumps(drift_data(run), indent=2) + "\n"


# -- Prometheus -------------------------------------------------------------------

def escape_label(value: str) -> str:
    """A label value per the Prometheus text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 3))


def drift_prometheus(run: RunResult) -> str:
    """`--format prometheus`: a node_exporter textfile collector file."""
    hosts = list(run.hosts.values())
    families: list[tuple[str, str, list[tuple[HostResult | None, float]]]] = [
        ("gpuprov_drift_resources",
         "Resources that differ from the desired state (absent when unreachable).",
         # Unreachable: the count is unknown, so no sample rather than a false 0.
         [(h, len(drifted(h))) for h in hosts if not h.unreachable]),
        ("gpuprov_host_in_sync", "1 if the host was checked and matches the desired state.",
         [(h, host_drift_status(h) == IN_SYNC) for h in hosts]),
        ("gpuprov_host_unreachable", "1 if the host could not be reached.",
         [(h, bool(h.unreachable)) for h in hosts]),
        ("gpuprov_host_failed", "1 if checking the host failed.",
         [(h, host_drift_status(h) == FAILED) for h in hosts]),
        ("gpuprov_reboot_pending", "1 if the host needs a reboot that has not been done.",
         [(h, h.reboot_pending) for h in hosts]),
        ("gpuprov_drift_check_timestamp_seconds", "When the drift check finished (Unix time).",
         [(None, run.finished)]),
        ("gpuprov_drift_check_duration_seconds", "How long the drift check took.",
         [(None, max(run.finished - run.started, 0.0))]),
    ]
    out: list[str] = []
    for name, help_text, samples in families:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        for host, value in samples:
            labels = f'{{host="{escape_label(host.host)}"}}' if host is not None else ""
            out.append(f"{name}{labels} {_num(value)}")
    return "\n".join(out) + "\n"
