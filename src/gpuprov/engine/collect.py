"""`gpuprov facts`: what each host is and has, as JSON data.

Every fact named on the command line is answered by ONE facts script per
host (one connection, one round trip), the same batch a run's first facts
come in. A name is what `--fact` accepts and the JSON keys it fills.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gpuprov.engine.connect import connector_for
from gpuprov.engine.executor import ConnectorFactory, RunOptions, internal_error
from gpuprov.engine.handlers import RebootRequired
from gpuprov.engine.hostfacts import HostFacts
from gpuprov.errors import GpuprovError, UnreachableHost
from gpuprov.facts.base import Fact
from gpuprov.facts.hardware import Cpu, DiskUsage, Memory
from gpuprov.facts.nvidia import LoadedDriver, NvidiaSmi
from gpuprov.facts.runtimes import ContainerdVersion, DockerVersion
from gpuprov.facts.system import Arch, InitSystem, KernelRelease, OsInfo, OsRelease, SecureBoot
from gpuprov.model.inventory import Host
from gpuprov.model.vars import build_host_vars


@dataclass(frozen=True)
class NamedFacts:
    """What one `--fact NAME` asks a host, and how its answers read in the JSON."""

    help: str
    facts: Callable[[Host], list[Fact[Any]]]
    #: the answers, in the order of facts(host) -> the JSON keys
    render: Callable[[list[Any]], dict[str, Any]]


def _os(values: list[Any]) -> dict[str, Any]:
    info: OsInfo = values[0]
    return {"os": dataclasses.asdict(info), "os_family": info.family,
            "supported": info.supported}


def _gpu(values: list[Any]) -> dict[str, Any]:
    smi: LoadedDriver = values[0]
    return {"gpus": [dataclasses.asdict(g) for g in smi.gpus],
            "nvidia": {"state": smi.state, "driver_version": smi.version,
                       "cuda_version": smi.cuda_version,
                       # why no GPU is listed: no nvidia-smi, no driver loaded...
                       "reason": smi.message or (None if smi.gpus else "nvidia-smi lists no GPU")}}


def disk_paths(host: Host) -> tuple[str, ...]:
    """/, and the host's data_dir where the inventory sets one (rendered)."""
    data_dir = build_host_vars(host).get("data_dir") if "data_dir" in host.vars else None
    return ("/", str(data_dir)) if data_dir and str(data_dir) != "/" else ("/",)


def _one(key: str, fact: Fact[Any], help: str,
         convert: Callable[[Any], Any] = lambda v: v) -> NamedFacts:
    return NamedFacts(help, lambda host: [fact], lambda values: {key: convert(values[0])})


def _asdict(value: Any) -> Any:
    return dataclasses.asdict(value)


#: every name `--fact` accepts, in the order the help lists them
CATALOGUE: dict[str, NamedFacts] = {
    "os": NamedFacts("/etc/os-release: distro, version, family, supported",
                     lambda host: [OsRelease()], _os),
    "kernel": _one("kernel", KernelRelease(), "uname -r"),
    "arch": _one("arch", Arch(), "uname -m (and dpkg's name for it)", _asdict),
    "init": _one("init", InitSystem(), "systemd or sysvinit"),
    "secure_boot": _one("secure_boot", SecureBoot(),
                        "enabled, disabled or unknown (mokutil, else the EFI variable)"),
    "reboot_pending": _one("reboot_pending", RebootRequired(),
                           "whether a reboot is pending", lambda v: v is not None),
    "gpu": NamedFacts("GPUs, driver and CUDA version (nvidia-smi); none: gpus [] and why",
                      lambda host: [NvidiaSmi()], _gpu),
    "cpu": _one("cpu", Cpu(), "model, sockets, cores, threads (/proc/cpuinfo)", _asdict),
    "memory": _one("memory", Memory(), "total and available MiB (/proc/meminfo)", _asdict),
    "disk": NamedFacts("df of / and of data_dir when the inventory sets it",
                       lambda host: [DiskUsage(disk_paths(host))],
                       lambda values: {"disk": [dataclasses.asdict(d) for d in values[0]]}),
    "docker": _one("docker", DockerVersion(), "docker --version, null if not installed"),
    "containerd": _one("containerd", ContainerdVersion(),
                       "containerd --version, null if not installed"),
}


def unknown_names(names: Sequence[str]) -> list[str]:
    return [n for n in names if n not in CATALOGUE]


def collect_facts(hosts: Sequence[Host], options: RunOptions, names: Sequence[str] = (),
                  connector_factory: ConnectorFactory = connector_for) -> dict[str, Any]:
    """The facts `names` (default: all) of each host, one round trip each, as
    JSON data by host name, in the hosts' order; a host that could not be
    asked has `unreachable` or `error` instead."""
    chosen = [CATALOGUE[n] for n in (names or CATALOGUE)]

    def one(host: Host) -> tuple[str, Any]:
        connector = connector_factory(host, options.connect)
        try:
            asked = [c.facts(host) for c in chosen]
            connector.connect()
            cache = HostFacts(host.name, connector, learning=False)
            cache.gather([f for facts in asked for f in facts], "gpuprov facts")
            data: dict[str, Any] = {}
            for named, facts in zip(chosen, asked, strict=True):
                data.update(named.render([cache.values[f] for f in facts]))
            data["connections"] = connector.stats.connections
            data["round_trips"] = connector.stats.round_trips
            return host.name, data
        except UnreachableHost as exc:
            return host.name, {"unreachable": str(exc), "error": None}
        except GpuprovError as exc:   # a FactError too: an odd target's output
            return host.name, {"unreachable": None, "error": str(exc)}
        except Exception as exc:
            return host.name, {"unreachable": None, "error": internal_error(exc)}
        finally:
            connector.close()

    with ThreadPoolExecutor(max(1, min(options.forks, len(hosts) or 1))) as pool:
        return dict(pool.map(one, hosts))
