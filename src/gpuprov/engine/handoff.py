"""`gpuprov k8s-handoff`'s data: what gpuprov installed on each cluster node,
read from the inventory with the roles' defaults below it, as Kubernetes will
need to know it (the GPU Operator must not install a second driver or toolkit).

Connects to nothing; `gpus` (from `gpuprov facts`) is added by the caller."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuprov.errors import GpuprovError
from gpuprov.model.inventory import Host
from gpuprov.model.paths import bundled_dir
from gpuprov.model.playbook import find_role, load_role_defaults, role_search_path
from gpuprov.model.vars import HostVars, build_host_vars

#: the roles whose variables say what a node has (their defaults.yml under the inventory)
ROLES = ("nvidia_driver", "container_toolkit", "gpu_exporter")

#: a role missing from the search path, or an older one without the variable
_FALLBACK = {"containerd_nvidia_default": False, "container_toolkit_default_runtime": False,
             "gpu_exporter_enabled": False, "containerd_package": "containerd.io"}

#: containerd learnt CDI (enable_cdi) in 1.7; Debian 12's own package is 1.6
CDI_SINCE = (1, 7)


@dataclass(frozen=True)
class GpuSummary:
    """One node's GPUs as `gpuprov facts --fact gpu` reported them."""

    count: int
    names: tuple[str, ...] = ()
    memory_mib: tuple[int, ...] = ()     # per GPU, the smallest first
    unknown: str = ""                    # why there is no answer (unreachable...)


@dataclass(frozen=True)
class Node:
    """A cluster node as gpuprov provisioned it."""

    host: str              # the inventory name
    name: str              # the Kubernetes node name (k8s_node_name, else host)
    driver_branch: str
    nvidia_default: bool   # containerd_nvidia_default: nvidia is containerd's default runtime
    gpu_exporter: bool     # gpuprov's node-exporter textfile GPU metrics run here
    gpus: GpuSummary | None = field(default=None)
    containerd_package: str = "containerd.io"   # or containerd, the distribution's own
    containerd: str | None = None    # --facts: `containerd --version`'s number
    containerd_why: str = ""         # --facts: why there is no number (unreachable...)


def _defaults() -> list[Mapping[str, Any]]:
    search = role_search_path(None, bundled_dir("roles"))
    out: list[Mapping[str, Any]] = [_FALLBACK]
    for role in ROLES:
        try:
            out.append(load_role_defaults(find_role(role, search)))
        except GpuprovError:
            continue   # a trimmed role path: the fallbacks answer
    return out


def _flag(hv: HostVars, host: str, name: str) -> bool:
    value = hv.get(name)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"   # -e name=true arrives as text
    raise GpuprovError(f"host {host}: {name} must be true or false, not {value!r} "
                       f"(set at {hv.origin(name)})")


def cluster_nodes(hosts: Sequence[Host]) -> list[Node]:
    """Each selected host as a Node, in the inventory's order; one clear error
    naming the host and the variable where a host cannot be handed over."""
    if not hosts:
        raise GpuprovError("no hosts selected", hint="pass -l with the cluster's group")
    defaults = _defaults()
    nodes: list[Node] = []
    for host in hosts:
        hv = build_host_vars(host, play_defaults=defaults)
        runtime = hv.get("container_runtime")
        if runtime != "containerd":
            # the kubelet talks CRI to containerd; a docker host has no nvidia runtime there
            raise GpuprovError(
                f"host {host.name}: container_runtime is {runtime!r}, not 'containerd' "
                f"(set at {hv.origin('container_runtime')})",
                hint="set container_runtime: containerd for the cluster group and run "
                     "gpuprov apply, or leave the host out with -l")
        nodes.append(Node(host=host.name, name=str(hv.get("k8s_node_name") or host.name),
                          driver_branch=str(hv.get("nvidia_driver_branch")),
                          # the role makes nvidia containerd's default for either variable
                          nvidia_default=(_flag(hv, host.name, "containerd_nvidia_default")
                                          or _flag(hv, host.name,
                                                   "container_toolkit_default_runtime")),
                          gpu_exporter=_flag(hv, host.name, "gpu_exporter_enabled"),
                          containerd_package=str(hv.get("containerd_package") or "").strip()))
    names = [n.name for n in nodes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GpuprovError(f"two hosts have the Kubernetes node name {twice[0]}",
                           hint="set k8s_node_name per host to the name `kubectl get "
                                "nodes` shows")
    return nodes


def cluster_default(nodes: Sequence[Node]) -> bool:
    """containerd_nvidia_default, which must agree on every node: the Operator's
    and the device plugin's values are one setting for the whole cluster."""
    values = {n.nvidia_default for n in nodes}
    if len(values) > 1:
        listed = ", ".join(f"{n.host}={str(n.nvidia_default).lower()}" for n in nodes)
        raise GpuprovError(f"containerd_nvidia_default differs between the nodes ({listed})",
                           hint="one value for the cluster group: the Helm values apply "
                                "to every node")
    return values.pop()


def gpu_summary(answer: Mapping[str, Any]) -> GpuSummary:
    """One host's `gpuprov facts --fact gpu` answer (engine.collect) as a summary."""
    if answer.get("unreachable") or answer.get("error"):
        return GpuSummary(0, unknown=str(answer.get("unreachable") or answer.get("error"))
                          .splitlines()[0])
    gpus = answer.get("gpus") or []
    memory = sorted(int(g["memory_total_mib"]) for g in gpus if g.get("memory_total_mib"))
    return GpuSummary(len(gpus), tuple(sorted({str(g.get("name")) for g in gpus})),
                      tuple(memory),
                      unknown="" if gpus else str((answer.get("nvidia") or {}).get("reason")
                                                  or "no GPU listed"))


def containerd_version(answer: Mapping[str, Any]) -> tuple[str | None, str]:
    """One host's `gpuprov facts --fact containerd` answer: (version, why none)."""
    if answer.get("unreachable") or answer.get("error"):
        return None, str(answer.get("unreachable") or answer.get("error")).splitlines()[0]
    version = answer.get("containerd")
    return (str(version), "") if version else (None, "containerd is not installed")


def has_cdi(version: str | None) -> bool | None:
    """Whether a containerd of this version can enable CDI; None: unknown."""
    match = re.match(r"v?(\d+)\.(\d+)", version or "")
    if not match:
        return None
    return (int(match.group(1)), int(match.group(2))) >= CDI_SINCE


def without_cdi(nodes: Sequence[Node]) -> list[Node]:
    """The nodes whose containerd (read with --facts) is too old for CDI."""
    return [n for n in nodes if has_cdi(n.containerd) is False]


def cluster_cdi(nodes: Sequence[Node]) -> bool:
    """CDI for the whole cluster: the Helm values are one setting for every
    node, so one node without CDI turns it off for all (the nvidia runtime
    then hands the GPUs over, which every node has)."""
    return not without_cdi(nodes)


def unread_distro_containerd(nodes: Sequence[Node]) -> list[Node]:
    """The nodes on the distribution's containerd (Debian 12's is 1.6, no CDI)
    whose version was not read: their CDI is a guess."""
    return [n for n in nodes
            if n.containerd_package == "containerd" and has_cdi(n.containerd) is None]
