"""`gpuprov status` output: the summary every format shares, JSON and
Prometheus (the table is status_table.py's).

Input is engine/status.py's data (one dict per host) and engine/health.py's
alerts. A host is unreachable (not asked), failed (asked, but its answer
could not be read), unhealthy (an alert) or healthy; a warning never makes a
host unhealthy. Every format counts with host_state(), so they cannot disagree.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry

from gpuprov.engine.health import ALERT, WARNING, Alert
from gpuprov.engine.pullstate import GOOD
from gpuprov.output.prometheus import gauge, text
from gpuprov.output.summary import HEALTHY, UNHEALTHY, Outcome, plural

FAILED, UNREACHABLE = "failed", "unreachable"
Status = Mapping[str, Mapping[str, Any]]
Alerts = Mapping[str, list[Alert]]


def host_state(data: Mapping[str, Any], alerts: list[Alert]) -> str:
    """unreachable | failed | unhealthy | healthy."""
    if not data.get("reachable"):
        return UNREACHABLE
    if data.get("error"):
        return FAILED
    return UNHEALTHY if any(a.severity == ALERT for a in alerts) else HEALTHY


@dataclass(frozen=True)
class StatusCounts:
    hosts: int
    healthy: int
    unhealthy: int
    failed: int
    unreachable: int
    alerts: int
    warnings: int


def status_counts(status: Status, alerts: Alerts) -> StatusCounts:
    states = [host_state(d, alerts.get(h, [])) for h, d in status.items()]
    every = [a for h in status for a in alerts.get(h, [])]
    return StatusCounts(len(states), states.count(HEALTHY), states.count(UNHEALTHY),
                        states.count(FAILED), states.count(UNREACHABLE),
                        sum(a.severity == ALERT for a in every),
                        sum(a.severity == WARNING for a in every))


def status_summary_line(status: Status, alerts: Alerts, outcome: Outcome | None) -> str:
    """'3 hosts: 1 healthy, 1 unhealthy (2 alerts), 0 failed, 1 unreachable, 1 warning
    -> exit 5 (unhealthy)'."""
    c = status_counts(status, alerts)
    line = (f"{plural(c.hosts, 'host')}: {c.healthy} healthy, {c.unhealthy} unhealthy"
            + (f" ({plural(c.alerts, 'alert')})" if c.unhealthy else "")
            + f", {c.failed} failed, {c.unreachable} unreachable"
            + (f", {plural(c.warnings, 'warning')}" if c.warnings else ""))
    return line + (f" -> {outcome.text()}" if outcome is not None else "")


# -- JSON -------------------------------------------------------------------------------

def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def status_data(status: Status, alerts: Alerts, outcome: Outcome | None = None,
                now: float | None = None) -> dict[str, Any]:
    """The status data, each host with its state and alerts, the alerts of every
    host, and the summary line as numbers."""
    c = status_counts(status, alerts)
    hosts = {name: {**data, "status": host_state(data, alerts.get(name, [])),
                    "alerts": [a.to_json() for a in alerts.get(name, [])]}
             for name, data in status.items()}
    data: dict[str, Any] = {
        "healthy": c.hosts == c.healthy,
        "summary": {"hosts": c.hosts, "healthy": c.healthy, "unhealthy": c.unhealthy,
                    "failed": c.failed, "unreachable": c.unreachable, "alerts": c.alerts,
                    "warnings": c.warnings},
    }
    if outcome is not None:
        data.update(exit_code=outcome.code, status=outcome.status)
    data.update(alerts=[a.to_json() for name in status for a in alerts.get(name, [])],
                hosts=hosts, checked_at=_iso(time.time() if now is None else now))
    return data


def status_json(status: Status, alerts: Alerts, outcome: Outcome | None = None,
                now: float | None = None) -> str:
    return json.dumps(status_data(status, alerts, outcome, now), indent=2) + "\n"


# -- Prometheus -------------------------------------------------------------------------

_GPU_LABELS = ("host", "gpu", "uuid", "model")
#: per GPU: (metric, help, the data's field, factor)
_GPU_METRICS = (
    ("utilization_percent", "GPU utilisation (%).", "utilization_gpu_pct", 1.0),
    ("memory_used_bytes", "GPU memory used.", "memory_used_mib", 1048576.0),
    ("memory_total_bytes", "GPU memory in all.", "memory_total_mib", 1048576.0),
    ("temperature_celsius", "GPU temperature.", "temperature_c", 1.0),
    ("power_draw_watts", "GPU power draw.", "power_draw_w", 1.0),
    ("power_limit_watts", "GPU power limit.", "power_limit_w", 1.0),
    ("ecc_volatile_uncorrected", "Volatile uncorrected ECC errors.",
     "ecc_volatile_uncorrected", 1.0),
    ("retired_pages_pending", "1 if retired pages are pending.", "retired_pages_pending", 1.0),
    ("remapped_rows_pending", "1 if remapped rows are pending.", "remapped_rows_pending", 1.0),
)


def _scaled(value: Any, factor: float) -> float | None:
    return None if value is None else float(value) * factor


def status_prometheus(status: Status, alerts: Alerts, outcome: Outcome | None = None,
                      now: float | None = None) -> str:
    """`--format prometheus`: node_exporter textfile metrics gpuprov_status_*,
    per GPU labelled host, gpu, uuid, model; a value a host did not answer has
    no sample."""
    registry = CollectorRegistry()
    gpus = [(h, g) for h, d in status.items() for g in d.get("gpus") or []]

    def gpu_labels(host: str, gpu: Mapping[str, Any]) -> tuple[str, ...]:
        return host, str(gpu.get("index")), str(gpu.get("uuid") or ""), str(gpu.get("name") or "")

    for metric, help_text, key, factor in _GPU_METRICS:
        gauge(registry, f"gpuprov_status_gpu_{metric}", help_text,
              [(gpu_labels(h, g), _scaled(g.get(key), factor)) for h, g in gpus], _GPU_LABELS)
    gauge(registry, "gpuprov_status_gpu_throttled", "1 for each active throttle reason.",
          [((*gpu_labels(h, g), r), 1) for h, g in gpus for r in g.get("throttle_reasons") or []],
          (*_GPU_LABELS, "reason"))
    gauge(registry, "gpuprov_status_gpu_processes", "Processes on the GPU.",
          [(gpu_labels(h, g), len(g.get("processes") or [])) for h, g in gpus], _GPU_LABELS)
    _host_metrics(registry, status, alerts)
    c = status_counts(status, alerts)
    gauge(registry, "gpuprov_status_hosts", "Hosts asked, by state.",
          [((s,), n) for s, n in ((HEALTHY, c.healthy), (UNHEALTHY, c.unhealthy),
                                  (FAILED, c.failed), (UNREACHABLE, c.unreachable))],
          ["status"])
    gauge(registry, "gpuprov_status_timestamp_seconds", "When the status was read (Unix time).",
          [((), time.time() if now is None else now)])
    if outcome is not None:
        gauge(registry, "gpuprov_status_exit_code", "The exit code of gpuprov status: 0 "
              "healthy, 2 a host failed, 4 unreachable, 5 unhealthy.",
              [((outcome.status,), outcome.code)], ["status"])
    return text(registry)


def _host_metrics(registry: CollectorRegistry, status: Status, alerts: Alerts) -> None:
    names = list(status)

    def per_host(metric: str, help_text: str, value: Any) -> None:
        gauge(registry, f"gpuprov_status_{metric}", help_text,
              [((h,), value(status[h])) for h in names], ["host"])

    def health(key: str) -> Any:
        return lambda d: (d.get("host_health") or {}).get(key)

    per_host("host_up", "1 if the host answered.", lambda d: bool(d.get("reachable")))
    per_host("host_healthy", "1 if the host answered and raised no alert.",
             lambda d: host_state(d, alerts.get(d["host"], [])) == HEALTHY)
    per_host("gpus", "GPUs the host shows.",
             lambda d: len(d.get("gpus") or []) if d.get("reachable") else None)
    per_host("round_trips", "Round trips the status took.", lambda d: d.get("round_trips"))
    per_host("reboot_pending", "1 if the host waits for a reboot.", health("reboot_pending"))
    per_host("uptime_seconds", "Seconds since the host booted.", health("uptime_s"))
    per_host("memory_total_bytes", "The host's memory.",
             lambda d: _scaled(health("memory_total_mib")(d), 1048576.0))
    per_host("memory_available_bytes", "The host's memory available.",
             lambda d: _scaled(health("memory_available_mib")(d), 1048576.0))
    per_host("data_dir_free_bytes", "Free space on the host's data_dir.",
             lambda d: _scaled(health("data_dir_free_mib")(d), 1048576.0))
    gauge(registry, "gpuprov_status_load", "Load average, by period.",
          [((h, period), load[i]) for h in names
           for load in [(status[h].get("host_health") or {}).get("load") or []]
           if len(load) == 3 for i, period in enumerate(("1m", "5m", "15m"))],
          ["host", "period"])
    services = [(h, s, st) for h in names
                for s, st in (status[h].get("services") or {}).items() if s != "jupyter"]
    gauge(registry, "gpuprov_status_service_running", "1 if the service runs (absent: no "
          "sample).", [((h, s), st == "running") for h, s, st in services if st != "absent"],
          ["host", "service"])
    jupyters = [(h, j) for h in names
                for j in [(status[h].get("services") or {}).get("jupyter")] if j]
    gauge(registry, "gpuprov_status_jupyter_running", "1 if the Jupyter container runs.",
          [((h,), j.get("container") == "running") for h, j in jupyters], ["host"])
    gauge(registry, "gpuprov_status_jupyter_http_status", "What Jupyter answers without "
          "credentials (HTTP status).", [((h,), j.get("http_status")) for h, j in jupyters],
          ["host"])
    applied = [(h, a) for h in names for a in [status[h].get("last_apply")] if a]
    gauge(registry, "gpuprov_status_last_apply_timestamp_seconds", "When the last apply "
          "finished (Unix time), labelled with the gpuprov version that did it.",
          [((h, str(a.get("version") or "")), epoch(a.get("time"))) for h, a in applied],
          ["host", "version"])
    _pull_metrics(registry, status)
    gauge(registry, "gpuprov_status_alert", "1 for each alert raised (rule: its variable).",
          [((a.host, a.rule, "" if a.gpu is None else str(a.gpu)), 1)
           for h in names for a in alerts.get(h, []) if a.severity == ALERT],
          ["host", "rule", "gpu"])


def _pull_metrics(registry: CollectorRegistry, status: Status) -> None:
    """The last `gpuprov pull` of each host in pull mode; a host without one has no
    sample, so an alert on a stale pull cannot fire for a host that never pulls."""
    pulled = [(h, p) for h, d in status.items() for p in [d.get("last_pull")] if p]
    gauge(registry, "gpuprov_status_last_pull_timestamp_seconds", "When the host's last "
          "gpuprov pull ran (Unix time).", [((h,), epoch(p.get("time"))) for h, p in pulled],
          ["host"])
    gauge(registry, "gpuprov_status_last_pull_success", "1 if the host's last gpuprov pull "
          "left it as its commit says (applied or unchanged).",
          [((h,), p.get("result") in GOOD) for h, p in pulled], ["host"])
    gauge(registry, "gpuprov_status_last_pull_info", "The host's last gpuprov pull: its "
          "commit (empty: none fetched), result and mode; always 1.",
          [((h, str(p.get("commit") or ""), str(p.get("result") or ""),
             str(p.get("mode") or "")), 1) for h, p in pulled],
          ["host", "commit", "result", "mode"])


def epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
