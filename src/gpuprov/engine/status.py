"""The data of `gpuprov status`: each host's GPU telemetry, health, services,
Jupyter, last apply and the notes roles report (k8s_node: kubelet/kubeadm
missing), in ONE facts script per host (one round trip).

collect_status() returns the status data shape (documented on
`collect_status`), the contract between this module and output/: a value a
host cannot answer is None, never invented. `StatusCollector` keeps each
host's connection open between collections (`--watch`), so every refresh is
one more round trip and no new login.

What a host should run comes from the inventory: data_dir, and the jupyter
role's variables (its defaults under the host's vars) for the port and
whether Jupyter is wanted there at all; the container's name and its start
script are the role's own (its settings module), never restated here.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpuprov.command import Command
from gpuprov.connectors.base import Connector
from gpuprov.engine.connect import connector_for
from gpuprov.engine.executor import ConnectorFactory, RunOptions, internal_error
from gpuprov.engine.handlers import RebootRequired
from gpuprov.engine.hostfacts import HostFacts
from gpuprov.engine.roles import load_role_module
from gpuprov.errors import GpuprovError, UnreachableHost
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.docker import ContainerState, ContainerStatus
from gpuprov.facts.hardware import DiskUsage, Memory
from gpuprov.facts.health import HostLoad, HttpStatus, LastApply, LastPull, ScriptVariable
from gpuprov.facts.services import ServiceInfo, ServiceState
from gpuprov.facts.telemetry import GpuProcesses, GpuTelemetry
from gpuprov.model.inventory import Host
from gpuprov.model.paths import bundled_dir
from gpuprov.model.playbook import find_role, load_role_defaults, role_search_path
from gpuprov.model.vars import build_host_vars
from gpuprov.ops.base import Op
from gpuprov.ops.docker import SPEC_LABEL

JUPYTER_ROLE = "jupyter"
K8S_ROLE = "k8s_node"
#: where Jupyter answers 403 without credentials and 200 only without auth
#: (a login page would redirect, 302, either way)
JUPYTER_PROBE_PATH = "/api/status"
#: the services every GPU host runs; sshd is "ssh" on Debian and Ubuntu
SERVICES = {"sshd": ("ssh", "sshd"), "docker": ("docker",), "containerd": ("containerd",)}


@dataclass(frozen=True)
class JupyterTarget:
    container: str     # the container's (and service's) name
    script: str        # the start script, which declares the spec (SPEC=...)
    port: int
    url: str           # what the host itself asks


@dataclass(frozen=True)
class StatusTarget:
    """What status asks one host, from the inventory."""

    data_dir: str | None
    jupyter: JupyterTarget | None
    #: k8s_node's own check of kubelet/kubeadm/kubectl, on its nodes only
    kube_tools: Op | None = None

    def facts(self) -> list[Fact[Any]]:
        facts: list[Fact[Any]] = [
            GpuTelemetry(), GpuProcesses(), RebootRequired(), HostLoad(), Memory(),
            LastApply(), LastPull(),
            *(ServiceState(n) for names in SERVICES.values() for n in names)]
        if self.data_dir:
            facts.append(DiskUsage((self.data_dir,)))
        if self.jupyter:
            facts += [ContainerState(self.jupyter.container),
                      ScriptVariable(self.jupyter.script, "SPEC"), HttpStatus(self.jupyter.url)]
        if self.kube_tools is not None:
            facts += self.kube_tools.facts()
        return facts

    def notes(self, values: Mapping[Fact[Any], Any]) -> list[str]:
        """What the roles' checks say besides (as drift-check prints them)."""
        report = self.kube_tools.report(FactView(values)) if self.kube_tools else None
        note = (report or {}).get("note")
        return [f"{K8S_ROLE}: {note}"] if note else []


@dataclass(frozen=True)
class _JupyterRole:
    path: Path
    defaults: dict[str, Any]
    settings: Any    # the role's settings module: NAME, SCRIPT, enabled(vars)


def _jupyter_role() -> _JupyterRole | None:
    """The jupyter role on the role search path (./roles, then the bundled
    ones); None where there is none (nothing to ask about Jupyter)."""
    try:
        path = find_role(JUPYTER_ROLE, role_search_path(None, bundled_dir("roles")))
    except GpuprovError:
        return None
    return _JupyterRole(path, load_role_defaults(path),
                        load_role_module(JUPYTER_ROLE, path, "settings"))


def _k8s_checks() -> Any:
    """k8s_node's checks module (KubeTools) on the role search path, or None."""
    try:
        path = find_role(K8S_ROLE, role_search_path(None, bundled_dir("roles")))
    except GpuprovError:
        return None
    return load_role_module(K8S_ROLE, path, "checks")


def _on(value: Any) -> bool:
    # -e k8s_node_enabled=true gives a string, as the role reads it
    return value is True or str(value).strip().lower() in ("true", "yes", "on", "1")


def status_target(host: Host, role: _JupyterRole | None,
                  extra_vars: Mapping[str, Any] | None = None,
                  k8s_checks: Any = None) -> StatusTarget:
    """data_dir, Jupyter and (k8s_checks: k8s_node's checks module) the Kubernetes
    tools check as the inventory declares them for `host`."""
    hv = build_host_vars(host, role_defaults=role.defaults if role else None,
                         extra_vars=extra_vars)
    data_dir = hv.get("data_dir")
    jupyter = None
    if role is not None and role.settings.enabled(hv):
        port = int(str(hv.get("jupyter_port", 8888)))
        bind = str(hv.get("jupyter_bind_address", "127.0.0.1"))
        tls = bool(hv.get("jupyter_tls_cert")) and bool(hv.get("jupyter_tls_key"))
        address = _probe_address(bind)
        url = f"{'https' if tls else 'http'}://{address}:{port}{JUPYTER_PROBE_PATH}"
        jupyter = JupyterTarget(role.settings.NAME, role.settings.SCRIPT, port, url)
    kube = (k8s_checks.KubeTools() if k8s_checks is not None
            and _on(hv.get("k8s_node_enabled")) else None)
    return StatusTarget(str(data_dir) if data_dir else None, jupyter, kube)


def _probe_address(bind: str) -> str:
    """Where the host reaches the published port: the bound address, loopback
    for "every address"."""
    try:
        ip = ipaddress.ip_address(bind)
    except ValueError:
        return bind
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "[::1]"
    return f"[{bind}]" if ip.version == 6 else bind


# ---------------------------------------------------------------- the shape

def unreachable_status(host: str, error: str, round_trips: int = 0,
                       reachable: bool = False) -> dict[str, Any]:
    """A host that could not be asked: every answer null."""
    return {"host": host, "reachable": reachable, "error": error, "round_trips": round_trips,
            "driver_version": None, "cuda_version": None, "gpus": [], "gpu_reason": None,
            "host_health": None, "services": None, "last_apply": None, "last_pull": None,
            "notes": []}


def host_status(host: str, target: StatusTarget, values: Mapping[Fact[Any], Any],
                round_trips: int) -> dict[str, Any]:
    """The status data of one host from its answered facts."""
    telemetry = values[GpuTelemetry()]
    processes = values[GpuProcesses()]
    gpus = []
    for sample in telemetry.gpus:
        gpu = asdict(sample)
        gpu["throttle_reasons"] = list(sample.throttle_reasons)
        gpu["processes"] = [{"pid": p.pid, "user": p.user, "container": p.container,
                             "used_memory_mib": p.used_memory_mib}
                            for p in processes if p.gpu_uuid == sample.uuid]
        gpus.append(gpu)
    return {"host": host, "reachable": True, "error": None, "round_trips": round_trips,
            "driver_version": telemetry.driver_version, "cuda_version": telemetry.cuda_version,
            "gpus": gpus, "gpu_reason": telemetry.reason,
            "host_health": _health(target, values),
            "services": {**{name: _service([values[ServiceState(u)] for u in units])
                            for name, units in SERVICES.items()},
                         "jupyter": _jupyter(target.jupyter, values)},
            "last_apply": _last_apply(values[LastApply()]),
            "last_pull": _last_pull(values[LastPull()]), "notes": target.notes(values)}


def _health(target: StatusTarget, values: Mapping[Fact[Any], Any]) -> dict[str, Any]:
    load, memory = values[HostLoad()], values[Memory()]
    free = None
    if target.data_dir:
        space = values[DiskUsage((target.data_dir,))][0]
        free = float(space.available_mib) if space.available_mib is not None else None
    return {"reboot_pending": values[RebootRequired()] is not None,
            "uptime_s": load.uptime_s, "load": list(load.load),
            "memory_total_mib": float(memory.total_mib),
            "memory_available_mib": (float(memory.available_mib)
                                     if memory.available_mib is not None else None),
            "data_dir": target.data_dir, "data_dir_free_mib": free}


def _service(units: Sequence[ServiceInfo]) -> str:
    """running | stopped | absent over the unit names one service goes by."""
    present = [u for u in units if u.exists]
    if any(u.running for u in present):
        return "running"
    return "stopped" if present else "absent"


def _jupyter(target: JupyterTarget | None,
             values: Mapping[Fact[Any], Any]) -> dict[str, Any] | None:
    if target is None:
        return None
    state: ContainerStatus = values[ContainerState(target.container)]
    declared = values[ScriptVariable(target.script, "SPEC")]
    probe = values[HttpStatus(target.url)]
    details = []
    spec_matches = None
    if state.docker == "absent":
        container = "absent"
        details.append("docker is not installed")
    elif state.docker == "down":
        container = "stopped"
        details.append(f"docker does not answer: {state.message}")
    elif state.container is None:
        container = "absent"
    else:
        container = "running" if state.container.running else "stopped"
        label = state.container.label(SPEC_LABEL)
        if declared is not None:
            spec_matches = label == declared
        else:
            details.append(f"no start script {target.script} declaring the spec")
    if probe.detail:
        details.append(f"port {target.port}: {probe.detail}")
    return {"container": container, "spec_matches": spec_matches, "port": target.port,
            "http_status": probe.status, "detail": "; ".join(details) or None}


def _last_apply(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None or not isinstance(record.get("time"), str):
        return None
    count = record.get("gpu_count")
    return {"time": record["time"], "version": str(record.get("version") or ""),
            "gpu_count": count if isinstance(count, int) and not isinstance(count, bool)
            else None}


def _last_pull(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """What `gpuprov pull` recorded of its last run (pull mode); None where it is off."""
    if record is None or not isinstance(record.get("time"), str):
        return None
    commit, good, interval = (record.get(k) for k in ("commit", "last_good_time", "interval"))
    return {"time": record["time"], "commit": commit if isinstance(commit, str) else None,
            "ref": str(record.get("ref") or ""), "mode": str(record.get("mode") or ""),
            "result": str(record.get("result") or "?"),
            "message": str(record.get("message") or ""),
            "last_good_time": good if isinstance(good, str) else None,
            "interval": interval if type(interval) is int and interval > 0 else None}


# ---------------------------------------------------------------- collecting

#: how long a host's facts script may take (nvidia-smi without persistence mode is slow)
SCRIPT_TIMEOUT = 300.0


def held_run(connector: Connector, script: str, sudo: bool) -> str | None:
    """The facts script's output, run as a held command: the first use of
    root finds out how to become root as it starts (connectors/sudo.py), so
    a host's first status costs no sudo probe of its own: one round trip.
    None when the connector cannot hold a command or the script did not end
    (the strict gather then asks the usual way)."""
    end = "@@gpuprov-status-end-" + secrets.token_hex(8)
    body = (script + f"printf '\\n%s\\n' {end}\nexit 0\n").encode()
    try:
        held = connector.hold(Command("sh", "-s"), sudo=sudo, stdin=body)
    except NotImplementedError:
        return None
    try:
        output, _ = held.read_until(end, SCRIPT_TIMEOUT)
    except (TimeoutError, ValueError):
        return None
    finally:
        held.release()
    return output

class StatusCollector:
    """Collects the status of `hosts`, again and again over the same
    connections (--watch); close() ends them."""

    def __init__(self, hosts: Sequence[Host], options: RunOptions,
                 connector_factory: ConnectorFactory = connector_for) -> None:
        self.hosts = [h.with_extra_vars(options.extra_vars) if options.extra_vars else h
                      for h in hosts]
        self.options = options
        self._factory = connector_factory
        self._connectors: dict[str, Connector] = {}
        self._lock = threading.Lock()
        role, k8s = _jupyter_role(), _k8s_checks()
        self._targets: dict[str, StatusTarget | GpuprovError] = {}
        for host in self.hosts:
            try:
                self._targets[host.name] = status_target(host, role, k8s_checks=k8s)
            except GpuprovError as exc:   # a bad variable: that host's error, not the run's
                self._targets[host.name] = exc

    def collect(self) -> dict[str, dict[str, Any]]:
        """The status data of every host by name, in the hosts' order."""
        workers = max(1, min(self.options.forks, len(self.hosts) or 1))
        with ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(self._one, self.hosts))

    def _connector(self, host: Host) -> Connector:
        with self._lock:
            if host.name not in self._connectors:
                self._connectors[host.name] = self._factory(host, self.options.connect)
            return self._connectors[host.name]

    def _one(self, host: Host) -> tuple[str, dict[str, Any]]:
        target = self._targets[host.name]
        if isinstance(target, GpuprovError):
            return host.name, unreachable_status(host.name, str(target), reachable=True)
        connector = self._connector(host)
        trips = connector.stats.round_trips
        try:
            connector.connect()
            trips = connector.stats.round_trips
            cache = HostFacts(host.name, connector, learning=False)
            facts = target.facts()
            sudo = any(f.sudo for f in facts)
            cache.gather_with(facts, "gpuprov status", lambda script: held_run(connector,
                                                                              script, sudo))
            cache.gather(facts, "gpuprov status")   # what the held run could not answer
            return host.name, host_status(host.name, target, cache.values,
                                          connector.stats.round_trips - trips)
        except UnreachableHost as exc:
            self._drop(host.name)
            return host.name, unreachable_status(host.name, str(exc),
                                                 connector.stats.round_trips - trips)
        except GpuprovError as exc:   # a FactError too: an odd target's output
            return host.name, unreachable_status(host.name, str(exc),
                                                 connector.stats.round_trips - trips, True)
        except Exception as exc:
            return host.name, unreachable_status(host.name, internal_error(exc),
                                                 connector.stats.round_trips - trips, True)

    def _drop(self, name: str) -> None:
        """Forget a host's broken connection: the next collect connects anew."""
        with self._lock:
            connector = self._connectors.pop(name, None)
        if connector is not None:
            connector.close()

    def close(self) -> None:
        with self._lock:
            connectors, self._connectors = list(self._connectors.values()), {}
        for connector in connectors:
            connector.close()


def collect_status(hosts: Sequence[Host], options: RunOptions,
                   connector_factory: ConnectorFactory = connector_for
                   ) -> dict[str, dict[str, Any]]:
    """Each host's status, one connection and one round trip per host::

        {HOST: {"host", "reachable", "error", "round_trips", "driver_version",
                "cuda_version", "gpus": [{"index", "name", "uuid", "pci_bus_id",
                "utilization_gpu_pct", "memory_used_mib", "memory_total_mib",
                "temperature_c", "power_draw_w", "power_limit_w",
                "ecc_volatile_uncorrected", "retired_pages_pending",
                "remapped_rows_pending", "throttle_reasons": [str],
                "processes": [{"pid", "user", "container", "used_memory_mib"}]}],
                "gpu_reason", "host_health": {"reboot_pending", "uptime_s", "load",
                "memory_total_mib", "memory_available_mib", "data_dir",
                "data_dir_free_mib"}, "services": {"sshd", "docker", "containerd":
                "running"|"stopped"|"absent", "jupyter": None | {"container",
                "spec_matches", "port", "http_status", "detail"}},
                "last_apply": None | {"time", "version", "gpu_count"},
                "last_pull": None | {"time", "commit", "ref", "mode", "result", "message",
                "last_good_time", "interval"},
                "notes": [str]}}

    A host that could not be asked has `reachable` false (or its `error`) and
    null answers."""
    collector = StatusCollector(hosts, options, connector_factory)
    try:
        return collector.collect()
    finally:
        collector.close()
