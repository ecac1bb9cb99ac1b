"""`gpuprov status` for people: per host its state, driver and CUDA, host
health, services and last apply, then a table of its GPUs and their
processes; the alerts below every host; the summary line last.

A value the host did not answer shows as "-", never as a guess.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from gpuprov.engine.health import ALERT
from gpuprov.output.status import (
    FAILED,
    UNREACHABLE,
    Alerts,
    Status,
    epoch,
    host_state,
    status_summary_line,
)
from gpuprov.output.summary import HEALTHY, UNHEALTHY, Outcome, plural

NA = "-"
_STATE_STYLE = {HEALTHY: "green", UNHEALTHY: "bold red", FAILED: "bold red",
                UNREACHABLE: "bold red"}


def _n(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return NA
    return f"{float(value):.{digits}f}{unit}"


def _gib(mib: Any) -> str:
    return NA if mib is None else f"{float(mib) / 1024:.1f}"


def _pair(used: Any, total: Any, unit: str, convert: Any = _n) -> str:
    if used is None and total is None:
        return NA
    return f"{convert(used)}/{convert(total)} {unit}"


def age(seconds: float) -> str:
    """'3d 4h', '2h 5m', '5m', '42s'."""
    s = max(int(seconds), 0)
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{s}s"


def _host_lines(data: Mapping[str, Any], now: float) -> list[str]:
    health = data.get("host_health") or {}
    parts = []
    if health.get("uptime_s") is not None:
        parts.append(f"up {age(health['uptime_s'])}")
    if health.get("load"):
        parts.append("load " + " ".join(f"{v:.2f}" for v in health["load"]))
    if health.get("memory_total_mib") is not None:
        parts.append(f"memory {_gib(health.get('memory_available_mib'))} of "
                     f"{_gib(health['memory_total_mib'])} GiB available")
    if health.get("data_dir"):
        parts.append(f"{health['data_dir']} {_gib(health.get('data_dir_free_mib'))} GiB free")
    if health.get("reboot_pending"):
        parts.append("REBOOT PENDING")
    lines = [f"host: {', '.join(parts) or NA}"]
    services = data.get("services") or {}
    shown = [f"{name} {state}" for name, state in services.items() if name != "jupyter"]
    jupyter = services.get("jupyter")
    if jupyter:
        http = jupyter.get("http_status")
        spec = {True: "", False: ", other spec", None: ""}[jupyter.get("spec_matches")]
        shown.append(f"jupyter {jupyter.get('container')}{spec} (:{jupyter.get('port')} "
                     f"HTTP {http if http is not None else 'no answer'})")
    lines.append(f"services: {', '.join(shown) or NA}")
    last = data.get("last_apply")
    if last:
        when = epoch(last.get("time"))
        ago = f"{age(now - when)} ago" if when is not None else str(last.get("time"))
        count = last.get("gpu_count")
        lines.append(f"last apply: {ago}, gpuprov {last.get('version') or '?'}"
                     + (f" ({plural(count, 'GPU')})" if count is not None else ""))
    else:
        lines.append("last apply: never recorded")
    pull = data.get("last_pull")
    if pull:   # pull mode on: what the host's own last `gpuprov pull` did
        when = epoch(pull.get("time"))
        ago = f"{age(now - when)} ago" if when is not None else str(pull.get("time"))
        commit = (pull.get("commit") or "")[:12] or "no commit"
        message = f": {pull['message']}" if pull.get("message") else ""
        lines.append(f"last pull: {ago}, {commit}, {pull.get('result')}{message}")
    lines += [f"note: {note}" for note in data.get("notes") or []]
    return lines


def _processes(gpu: Mapping[str, Any]) -> str:
    rows = []
    for p in gpu.get("processes") or []:
        mem = p.get("used_memory_mib")
        rows.append(" ".join([str(p.get("pid")), p.get("user") or NA, p.get("container") or NA,
                              NA if mem is None else f"{float(mem):.0f} MiB"]))
    return "\n".join(rows) or NA


def gpu_table(data: Mapping[str, Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for column in ("GPU", "UTIL", "MEMORY", "TEMP", "POWER", "ECC", "PENDING", "THROTTLE",
                   "PROCESSES (pid user container mem)"):
        table.add_column(column, overflow="fold")
    for gpu in data.get("gpus") or []:
        pending = [w for k, w in (("retired_pages_pending", "pages"),
                                  ("remapped_rows_pending", "rows")) if gpu.get(k)]
        table.add_row(
            f"{gpu.get('index')} {gpu.get('name') or ''}".strip(),
            _n(gpu.get("utilization_gpu_pct"), "%"),
            _pair(gpu.get("memory_used_mib"), gpu.get("memory_total_mib"), "GiB", _gib),
            _n(gpu.get("temperature_c"), " C"),
            _pair(gpu.get("power_draw_w"), gpu.get("power_limit_w"), "W"),
            NA if gpu.get("ecc_volatile_uncorrected") is None
            else str(gpu["ecc_volatile_uncorrected"]),
            ", ".join(pending) or NA,
            ", ".join(gpu.get("throttle_reasons") or []) or NA,
            _processes(gpu))
    return table


def host_block(name: str, data: Mapping[str, Any], state: str, now: float) -> RenderableType:
    head = Text(name + "  ", style="bold")
    head.append(state, style=_STATE_STYLE.get(state, ""))
    if state in (UNREACHABLE, FAILED):
        head.append(f": {(data.get('error') or '').strip()}", style="red")
        return head
    head.append(f"  driver {data.get('driver_version') or NA}, "
                f"CUDA {data.get('cuda_version') or NA}")
    parts: list[RenderableType] = [head, *(Text("  " + line) for line in _host_lines(data, now))]
    if data.get("gpus"):
        parts.append(gpu_table(data))
    else:
        parts.append(Text(f"  no GPU: {data.get('gpu_reason') or 'nvidia-smi lists none'}",
                          style="yellow"))
    return Group(*parts)


def _hosts(status: Status, alerts: Alerts, now: float) -> list[RenderableType]:
    parts: list[RenderableType] = []
    for name, data in status.items():
        parts.append(host_block(name, data, host_state(data, alerts.get(name, [])), now))
        parts.append(Text(""))
    return parts


def _footer(status: Status, alerts: Alerts, outcome: Outcome | None) -> list[Text]:
    """The alerts and warnings of every host, then the summary line."""
    every = [a for name in status for a in alerts.get(name, [])]
    lines = [Text("alerts:", style="bold")] if every else []
    for alert in every:
        word, style = ("ALERT", "bold red") if alert.severity == ALERT else ("warning", "yellow")
        lines.append(Text.assemble("  ", (word, style), " ", alert.message))
    code = outcome.code if outcome is not None else 0
    lines.append(Text(status_summary_line(status, alerts, outcome),
                      style="" if code == 0 else "bold red"))
    return lines


def status_renderable(status: Status, alerts: Alerts, outcome: Outcome | None = None,
                      now: float | None = None) -> RenderableType:
    """Every host, the alerts, the summary line: one renderable (rich Live redraws it)."""
    now = time.time() if now is None else now
    return Group(*_hosts(status, alerts, now), *_footer(status, alerts, outcome))


def status_table(status: Status, alerts: Alerts, console: Console,
                 outcome: Outcome | None = None, now: float | None = None) -> None:
    now = time.time() if now is None else now
    console.print(Group(*_hosts(status, alerts, now)), highlight=False)
    for line in _footer(status, alerts, outcome):
        # one alert, one line, also in a log or a mail: never folded at the width
        console.print(line, soft_wrap=True, highlight=False)


def status_table_text(status: Status, alerts: Alerts, outcome: Outcome | None = None,
                      now: float | None = None, width: int = 160) -> str:
    """The table as plain text, for `-o FILE` and pipes."""
    buf = io.StringIO()
    status_table(status, alerts, Console(file=buf, force_terminal=False, width=width,
                                         highlight=False), outcome, now)
    return buf.getvalue()
