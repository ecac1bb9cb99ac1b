"""The health rules of `gpuprov status`: pure functions over the status data
(engine/status.py's shape) that say what is wrong on a host.

A rule's threshold is an inventory variable (`health_*`) with its default in
`gpuprov/data/health_defaults.yml`, so a group of hot-running cards gets its
own limit the way any variable is overridden. Every alert names the variable
of the rule that raised it, so a person knows what to change if the rule, not
the host, is wrong. A warning is shown but never makes a host unhealthy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from gpuprov.engine.pullstate import epoch
from gpuprov.errors import InventoryError
from gpuprov.model.inventory import Host
from gpuprov.model.vars import HostVars, build_host_vars
from gpuprov.model.yamlfile import load_yaml

ALERT, WARNING = "alert", "warning"

#: nvidia-smi's clocks_event_reasons names (NVML's bits)
THROTTLE_REASONS = ("gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown",
                    "sync_boost", "sw_thermal_slowdown", "hw_thermal_slowdown",
                    "hw_power_brake_slowdown", "display_clock_setting")
#: the services a rule may watch (the status data's names)
SERVICES = ("sshd", "docker", "containerd")
#: what Jupyter answers without credentials when it asks for them: a redirect
#: to the login page, or 401/403 from the API
JUPYTER_AUTH_STATUSES = frozenset({301, 302, 303, 307, 308, 401, 403})


@dataclass(frozen=True)
class Alert:
    """One thing wrong (or, a warning, worth knowing) on a host."""

    host: str
    rule: str                 # the variable of the rule, e.g. health_gpu_temperature_max
    message: str              # says the host, the GPU, the value and the rule
    severity: str = ALERT
    gpu: int | None = None
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "rule": self.rule, "severity": self.severity,
                "gpu": self.gpu, "value": self.value, "message": self.message}


@dataclass(frozen=True)
class HealthRules:
    """One host's rules (its health_* variables)."""

    gpu_temperature_max: float = 85.0
    ecc_errors_max: int = 0
    pending_pages: bool = True
    jupyter: bool = True
    gpu_missing: bool = True
    throttle_reasons: tuple[str, ...] = ("hw_slowdown", "hw_thermal_slowdown",
                                         "sw_thermal_slowdown", "hw_power_brake_slowdown")
    services: tuple[str, ...] = SERVICES
    reboot_pending: bool = True
    #: pull mode: alert when the last good pull is older than this many intervals (0: off)
    pull_stale_intervals: float = 3.0


def defaults_path() -> Path:
    return Path(str(resources.files("gpuprov") / "data" / "health_defaults.yml"))


def load_defaults() -> Mapping[str, Any]:
    """The defaults file (a YAML mapping that keeps each key's line)."""
    data = load_yaml(defaults_path())
    return data if isinstance(data, Mapping) else {}


def rules_for(host: Host, defaults: Mapping[str, Any] | None = None) -> HealthRules:
    """The rules of `host`: the defaults under its inventory variables. A bad
    value is an InventoryError naming the variable and where it was set."""
    hv = build_host_vars(host, role_defaults=load_defaults() if defaults is None else defaults)
    return HealthRules(
        gpu_temperature_max=_number(hv, "health_gpu_temperature_max", 85.0, 0, 200),
        ecc_errors_max=int(_number(hv, "health_ecc_errors_max", 0, 0, None, integer=True)),
        pending_pages=_flag(hv, "health_pending_pages"),
        jupyter=_flag(hv, "health_jupyter"),
        gpu_missing=_flag(hv, "health_gpu_missing"),
        throttle_reasons=_names(hv, "health_throttle_reasons", THROTTLE_REASONS),
        services=_names(hv, "health_services", SERVICES),
        reboot_pending=_flag(hv, "health_reboot_pending"),
        pull_stale_intervals=_number(hv, "health_pull_stale_intervals", 3.0, 0, None),
    )


def _bad(hv: HostVars, name: str, must: str) -> InventoryError:
    origin = hv.origin(name)
    return InventoryError(f"{hv.host}: {name}={hv.raw(name)!r}: {must}", origin.file,
                          origin.line, hint="fix the value, or remove it for the default")


def _number(hv: HostVars, name: str, default: float, low: float, high: float | None,
            integer: bool = False) -> float:
    if name not in hv:
        return default
    value = hv[name]
    if isinstance(value, str):
        with contextlib.suppress(ValueError):   # -e style "90": the number it says
            value = float(value) if not integer else int(value)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and (not integer or float(value).is_integer()) \
        and low <= value and (high is None or value <= high)
    if not ok:
        kind = "a whole number" if integer else "a number"
        span = f"{low:g}-{high:g}" if high is not None else f">= {low:g}"
        raise _bad(hv, name, f"must be {kind} ({span})")
    return float(value)


def _flag(hv: HostVars, name: str) -> bool:
    value = hv.get(name, True)
    if not isinstance(value, bool):
        raise _bad(hv, name, "must be true or false")
    return value


def _names(hv: HostVars, name: str, known: Sequence[str]) -> tuple[str, ...]:
    value = hv.get(name, [])
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or any(v not in known for v in value):
        raise _bad(hv, name, f"must be a list of: {', '.join(known)}")
    return tuple(value)


# -- evaluating -------------------------------------------------------------------------

def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def evaluate(data: Mapping[str, Any], rules: HealthRules,
             now: float | None = None) -> list[Alert]:
    """The alerts and warnings of one host's status data. A host that could not
    be asked has none: it is unreachable or failed, not unhealthy."""
    host = str(data.get("host"))
    if not data.get("reachable") or data.get("error"):
        return []
    alerts: list[Alert] = []
    for gpu in data.get("gpus") or []:
        alerts += _gpu_alerts(host, gpu, rules)
    alerts += _gpu_count(host, data, rules)
    alerts += _service_alerts(host, data.get("services") or {}, rules)
    health = data.get("host_health") or {}
    if rules.reboot_pending and health.get("reboot_pending"):
        alerts.append(Alert(host, "health_reboot_pending",
                            f"{host}: reboot pending (health_reboot_pending)", WARNING,
                            value=True))
    if data.get("last_pull") and rules.pull_stale_intervals:
        alerts += _pull_alerts(host, data["last_pull"], rules.pull_stale_intervals,
                               time.time() if now is None else now)
    return alerts


def _pull_alerts(host: str, pull: Mapping[str, Any], intervals: float,
                 now: float) -> list[Alert]:
    """Pull mode: the host has not converged from its repository for too long
    (fetches failing, bad commits, a stopped timer), or never has."""
    interval, good = pull.get("interval"), epoch(pull.get("last_good_time"))
    if not interval:
        return []   # a last.json from before it carried its interval
    if good is not None and now - good <= intervals * interval:
        return []
    last = f"last: {pull.get('result')}" + (f": {pull['message']}" if pull.get("message")
                                            else "")
    since = (f"no good pull for {_num((now - good) / 60)} min" if good is not None
             else "no good pull yet")
    return [Alert(host, "health_pull_stale_intervals",
                  f"{host}: {since}, more than {_num(intervals)} x its {interval} s pull "
                  f"interval ({last}) (health_pull_stale_intervals)",
                  value=None if good is None else round(now - good))]


def _gpu_alerts(host: str, gpu: Mapping[str, Any], rules: HealthRules) -> list[Alert]:
    index = gpu.get("index")
    where = f"{host} GPU {index}"
    out = []
    temp = gpu.get("temperature_c")
    if temp is not None and temp >= rules.gpu_temperature_max:
        out.append(Alert(host, "health_gpu_temperature_max",
                         f"{where}: temperature {_num(temp)} C >= "
                         f"{_num(rules.gpu_temperature_max)} C (health_gpu_temperature_max)",
                         gpu=index, value=temp))
    ecc = gpu.get("ecc_volatile_uncorrected")
    if ecc is not None and ecc > rules.ecc_errors_max:
        out.append(Alert(host, "health_ecc_errors_max",
                         f"{where}: {ecc} volatile uncorrected ECC errors > "
                         f"{rules.ecc_errors_max} (health_ecc_errors_max)", gpu=index, value=ecc))
    if rules.pending_pages:
        for key, words in (("retired_pages_pending", "retired pages pending"),
                           ("remapped_rows_pending", "remapped rows pending")):
            if gpu.get(key):
                out.append(Alert(host, "health_pending_pages",
                                 f"{where}: {words} (health_pending_pages)", gpu=index,
                                 value=True))
    throttled = [r for r in gpu.get("throttle_reasons") or [] if r in rules.throttle_reasons]
    if throttled:
        out.append(Alert(host, "health_throttle_reasons",
                         f"{where}: throttled: {', '.join(throttled)} "
                         "(health_throttle_reasons)", gpu=index, value=throttled))
    return out


def _gpu_count(host: str, data: Mapping[str, Any], rules: HealthRules) -> list[Alert]:
    recorded = (data.get("last_apply") or {}).get("gpu_count")
    seen = len(data.get("gpus") or [])
    if not rules.gpu_missing or recorded is None or seen >= recorded:
        return []
    why = f" ({data['gpu_reason']})" if data.get("gpu_reason") else ""
    return [Alert(host, "health_gpu_missing",
                  f"{host}: {seen} of the {recorded} GPUs of the last apply{why} "
                  "(health_gpu_missing)", value=seen)]


def _service_alerts(host: str, services: Mapping[str, Any], rules: HealthRules) -> list[Alert]:
    out = [Alert(host, "health_services", f"{host}: {name} is stopped (health_services)",
                 value="stopped")
           for name in rules.services if services.get(name) == "stopped"]
    jupyter = services.get("jupyter")
    if rules.jupyter and jupyter:
        out += _jupyter_alerts(host, jupyter)
    return out


def _jupyter_alerts(host: str, jupyter: Mapping[str, Any]) -> list[Alert]:
    port, status = jupyter.get("port"), jupyter.get("http_status")
    detail = f": {jupyter['detail']}" if jupyter.get("detail") else ""
    if jupyter.get("container") != "running":
        return [Alert(host, "health_jupyter", f"{host}: Jupyter down: container "
                      f"{jupyter.get('container')}{detail} (health_jupyter)",
                      value=jupyter.get("container"))]
    if status is None:
        return [Alert(host, "health_jupyter", f"{host}: Jupyter down: port {port} does not "
                      f"answer{detail} (health_jupyter)", value=None)]
    if status == 200:
        return [Alert(host, "health_jupyter", f"{host}: Jupyter unauthenticated: HTTP 200 "
                      f"without credentials on port {port} (health_jupyter)", value=status)]
    if status not in JUPYTER_AUTH_STATUSES:
        return [Alert(host, "health_jupyter", f"{host}: Jupyter unhealthy: HTTP {status} on "
                      f"port {port} (health_jupyter)", value=status)]
    if jupyter.get("spec_matches") is False:
        return [Alert(host, "health_jupyter", f"{host}: Jupyter runs another spec than "
                      "declared (apply restarts it) (health_jupyter)", WARNING, value=False)]
    return []


def host_alerts(status: Mapping[str, Mapping[str, Any]],
                rules: Mapping[str, HealthRules]) -> dict[str, list[Alert]]:
    """Every host's alerts and warnings, by host name (hosts in the data's order)."""
    return {name: evaluate(data, rules.get(name, HealthRules()))
            for name, data in status.items()}
