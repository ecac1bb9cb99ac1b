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

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.text import Text

from gpuprov.engine.results import HostResult, RunResult, mask_json
from gpuprov.output.prometheus import gauge, text
from gpuprov.output.report import host_errors, indent
from gpuprov.output.summary import (
    DRIFT,
    FAILED,
    IN_SYNC,
    UNREACHABLE,
    Outcome,
    drift_counts,
    drifted,
    host_drift_status,
    render_summary,
)

__all__ = ["DRIFT", "FAILED", "IN_SYNC", "UNREACHABLE", "drift_data", "drift_json",
           "drift_prometheus", "drift_table", "drift_table_text", "drifted", "host_drift_status"]


def _error(host: HostResult) -> str | None:
    if host.unreachable:
        return None
    return "\n".join(host_errors(host)) or None


# -- table ------------------------------------------------------------------------

def drift_table(run: RunResult, console: Console, outcome: Outcome | None = None) -> None:
    """One status line per host, then its drifting resources; then the roles a
    host never got to, and the summary line with the exit code."""
    width = max((len(name) for name in run.hosts), default=0)
    for h in run.hosts.values():
        status = host_drift_status(h)
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
        for note in h.task_notes():   # not drift: what the roles report besides
            line.append("\n" + " " * (width + 4) + f"note: {note}", style="cyan")
        console.print(line, soft_wrap=True, highlight=False)
    render_summary(run, console, outcome, drift=True)


def drift_table_text(run: RunResult, width: int = 120, outcome: Outcome | None = None) -> str:
    """drift_table as plain text, for `--output FILE` (with write_text_atomic)."""
    buf = io.StringIO()
    drift_table(run, Console(file=buf, force_terminal=False, width=width), outcome)
    return buf.getvalue()


# -- JSON -------------------------------------------------------------------------

def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def drift_data(run: RunResult, outcome: Outcome | None = None) -> dict[str, Any]:
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
            # the roles the host never got to, and why (the table's "not reached" lines)
            "not_reached": [n.to_json() for n in h.not_reached()],
            "notes": h.task_notes(),
            # what the check cost (benchmarks/ reads these; apply's --report has them too)
            "connections": h.connections,
            "round_trips": h.round_trips,
            "profile": h.profile,
        }
    counts = drift_counts(run)
    data: dict[str, Any] = {
        "in_sync": all(v["status"] == IN_SYNC for v in hosts.values()),
        # the table's summary line, as numbers
        "summary": {"hosts": counts.hosts, "in_sync": counts.ok, "drifted": counts.changed,
                    "drifted_resources": counts.resources, "failed": counts.failed,
                    "unreachable": counts.unreachable},
    }
    if outcome is not None:
        data.update(exit_code=outcome.code, status=outcome.status)
    data.update({
        # already masked by the engine; again here, as this file leaves the controller
        "hosts": mask_json(hosts, run.secret_values()),
        "checked_at": _iso(run.finished or time.time()),
    })
    return data


def drift_json(run: RunResult, outcome: Outcome | None = None) -> str:
    """`--format json`: `in_sync` is true only if every host was checked and matched;
    `summary`, `exit_code` and `status` say what the table's last line says."""
    return json.dumps(drift_data(run, outcome), indent=2) + "\n"


# -- Prometheus -------------------------------------------------------------------

def escape_label(value: str) -> str:
    """A label value per the Prometheus text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def drift_prometheus(run: RunResult, outcome: Outcome | None = None) -> str:
    """`--format prometheus`: a node_exporter textfile collector file; the run's
    counts and exit code as the table's summary line says them."""
    hosts = list(run.hosts.values())
    counts = drift_counts(run)
    by_status = {IN_SYNC: counts.ok, DRIFT: counts.changed, FAILED: counts.failed,
                 UNREACHABLE: counts.unreachable}
    registry = CollectorRegistry()
    per_host: list[tuple[str, str, list[tuple[HostResult, float | None]]]] = [
        ("gpuprov_drift_resources",
         "Resources that differ from the desired state (absent when unreachable).",
         # Unreachable: the count is unknown, so no sample rather than a false 0.
         [(h, None if h.unreachable else len(drifted(h))) for h in hosts]),
        ("gpuprov_host_in_sync", "1 if the host was checked and matches the desired state.",
         [(h, host_drift_status(h) == IN_SYNC) for h in hosts]),
        ("gpuprov_host_unreachable", "1 if the host could not be reached.",
         [(h, bool(h.unreachable)) for h in hosts]),
        ("gpuprov_host_failed", "1 if checking the host failed.",
         [(h, host_drift_status(h) == FAILED) for h in hosts]),
        ("gpuprov_reboot_pending", "1 if the host needs a reboot that has not been done.",
         [(h, h.reboot_pending) for h in hosts]),
    ]
    for name, help_text, samples in per_host:
        gauge(registry, name, help_text, [((h.host,), v) for h, v in samples], ["host"])
    gauge(registry, "gpuprov_drift_check_hosts", "Hosts checked, by outcome.",
          [((status,), n) for status, n in by_status.items()], ["status"])
    gauge(registry, "gpuprov_drift_check_drifted_resources",
          "Resources that differ on the drifted hosts.", [((), counts.resources)])
    gauge(registry, "gpuprov_drift_check_timestamp_seconds",
          "When the drift check finished (Unix time).", [((), run.finished)])
    gauge(registry, "gpuprov_drift_check_duration_seconds", "How long the drift check took.",
          [((), max(run.finished - run.started, 0.0))])
    if outcome is not None:
        gauge(registry, "gpuprov_drift_check_exit_code", "The exit code of gpuprov "
              "drift-check: 0 in sync, 2 a host failed, 3 drift, 4 unreachable.",
              [((outcome.status,), outcome.code)], ["status"])
    return text(registry)
