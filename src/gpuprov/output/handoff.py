"""`gpuprov k8s-handoff`'s text: the GPU Operator's Helm values, the node
labels as kubectl commands, the NVIDIA device plugin's Helm values.

The Operator's keys are the ones its documentation lists: "Common chart
customization options" in
https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/getting-started.html
(driver.enabled, toolkit.enabled, cdi.enabled, cdi.default, operator.defaultRuntime,
devicePlugin.enabled, dcgmExporter.enabled) and the chart's values.yaml
(NVIDIA/gpu-operator, deployments/gpu-operator/values.yaml). The node labels
nvidia.com/gpu.deploy.<operand>=false keep one operand off one node (same pages).
The device plugin's keys are its chart's values.yaml (NVIDIA/k8s-device-plugin,
deployments/helm/nvidia-device-plugin/values.yaml). The output is the same for
the same inventory: keys in a fixed order, nodes in the inventory's order."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

import yaml

from gpuprov.engine.handoff import (
    Node,
    cluster_cdi,
    cluster_default,
    has_cdi,
    unread_distro_containerd,
    without_cdi,
)

FORMATS = ("values", "labels", "device-plugin", "all")

OPERATOR_DOCS = ("https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/"
                 "getting-started.html#common-chart-customization-options")
PLUGIN_DOCS = ("https://github.com/NVIDIA/k8s-device-plugin/blob/main/deployments/helm/"
               "nvidia-device-plugin/values.yaml")


def operator_values(nodes: Sequence[Node]) -> dict[str, Any]:
    """The GPU Operator's Helm values for what gpuprov installed on `nodes`."""
    return {
        # gpuprov installed and pinned the driver and the toolkit on the host:
        # the Operator's containers would install a second copy over them
        "driver": {"enabled": False},
        "toolkit": {"enabled": False},
        # gpuprov enables CDI in containerd and writes /etc/cdi/nvidia.yaml;
        # cdi.default follows containerd_nvidia_default (charts from v25.10 make CDI
        # the default with cdi.enabled alone and ignore it, older ones read it).
        # A containerd older than 1.7 cannot enable CDI: off for the whole cluster
        "cdi": {"enabled": cluster_cdi(nodes),
                "default": cluster_default(nodes) and cluster_cdi(nodes)},
        "operator": {"defaultRuntime": "containerd"},
        "devicePlugin": {"enabled": True},
        # gpuprov's gpu_exporter already exports the GPU metrics through
        # node-exporter; DCGM's exporter beside it would poll the same GPUs twice
        # and publish the metrics twice. Off only where every node has gpu_exporter;
        # on mixed clusters the node labels turn it off node by node.
        "dcgmExporter": {"enabled": not all(n.gpu_exporter for n in nodes)},
    }


def node_labels(node: Node) -> dict[str, str]:
    """The Operator's per-node switches for the operands gpuprov provides there."""
    labels = {"nvidia.com/gpu.deploy.driver": "false",
              "nvidia.com/gpu.deploy.container-toolkit": "false"}
    if node.gpu_exporter:
        labels["nvidia.com/gpu.deploy.dcgm-exporter"] = "false"
    return labels


def plugin_values(nodes: Sequence[Node]) -> dict[str, Any]:
    """NVIDIA/k8s-device-plugin's Helm values, for clusters without the Operator."""
    default = cluster_default(nodes)
    return {
        # where nvidia is not containerd's default runtime, the plugin's pod needs
        # it by name to see the driver (the RuntimeClass `nvidia` must exist)
        "runtimeClassName": None if default else "nvidia",
        # containerd has CDI on and /etc/cdi/nvidia.yaml names every GPU: the
        # plugin asks for devices by CDI name, no NVIDIA_VISIBLE_DEVICES trick;
        # without CDI (containerd < 1.7) that variable, read by the nvidia runtime
        "deviceListStrategy": "cdi-annotations" if cluster_cdi(nodes) else "envvar",
        "deviceIDStrategy": "uuid",
        # the driver is installed on the host itself, not in a driver container
        "nvidiaDriverRoot": "/",
        "migStrategy": "none",
        "failOnInitError": True,
    }


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _gpu_line(node: Node) -> str:
    gpus = node.gpus
    if gpus is None:
        return ""
    if not gpus.count:
        return f"  no GPU: {gpus.unknown}"
    memory = (f", {min(gpus.memory_mib)} MiB each" if gpus.memory_mib
              and min(gpus.memory_mib) == max(gpus.memory_mib)
              else f", {min(gpus.memory_mib)}-{max(gpus.memory_mib)} MiB"
              if gpus.memory_mib else "")
    return f"  {gpus.count} x {' / '.join(gpus.names)}{memory}"


def _node_comments(nodes: Sequence[Node]) -> list[str]:
    return [f"#   {n.name}: driver branch {n.driver_branch}{_gpu_line(n)}" for n in nodes]


def cdi_comments(nodes: Sequence[Node]) -> list[str]:
    """Why CDI is off, or why it may not work: empty when every node is fine."""
    old = without_cdi(nodes)
    if old:
        lines = ["# CDI is off: containerd older than 1.7 cannot enable it (enable_cdi came "
                 "with 1.7;",
                 "# Debian 12 ships 1.6):",
                 *(f"#   {n.name}: containerd {n.containerd}" for n in old)]
        able = [n for n in nodes if has_cdi(n.containerd)]
        if able:
            listed = ", ".join(f"{n.name} ({n.containerd})" for n in able)
            lines += [f"# {listed} could use CDI, but these values are",
                      "# one setting for the whole cluster: the one every node can run."]
        lines += ["# containerd 1.7 or later on the nodes above (Docker's containerd.io, or a "
                  "newer",
                  "# distribution) turns CDI on. Until then GPUs reach containers through "
                  "the nvidia"]
        if cluster_default(nodes):
            lines.append("# runtime (NVIDIA_VISIBLE_DEVICES), containerd's default runtime on "
                         "every node.")
        else:
            lines += ["# runtime (NVIDIA_VISIBLE_DEVICES), which is not containerd's default "
                      "runtime: GPU pods need",
                      "# runtimeClassName: nvidia (or set containerd_nvidia_default: true)."]
        return lines
    unread = unread_distro_containerd(nodes)
    if not unread:
        return []
    return ["# WARNING: containerd_package: containerd (the distribution's) on "
            + ", ".join(n.name + (f" ({n.containerd_why})" if n.containerd_why else "")
                        for n in unread) + ":",
            "# containerd older than 1.7 (Debian 12's 1.6) has no CDI, which these values "
            "rely on. Re-run with",
            "# --facts to read its version: the values then leave CDI off where it is "
            "missing."]


def render_values(nodes: Sequence[Node]) -> str:
    head = ["# NVIDIA GPU Operator Helm values for what gpuprov installed:",
            "#   helm install gpu-operator nvidia/gpu-operator -n gpu-operator "
            "--create-namespace -f THIS_FILE",
            f"# Keys: {OPERATOR_DOCS}",
            "# and the chart's values.yaml (NVIDIA/gpu-operator deployments/gpu-operator).",
            "# The driver is the host's (gpuprov's nvidia_driver role), not the Operator's:",
            *_node_comments(nodes), *cdi_comments(nodes)]
    return "\n".join(head) + "\n" + _yaml(operator_values(nodes))


def render_labels(nodes: Sequence[Node]) -> str:
    lines = ["# Node labels: the Operator leaves to gpuprov what gpuprov installed there."]
    for node in nodes:
        pairs = " ".join(f"{k}={v}" for k, v in node_labels(node).items())
        lines.append(f"kubectl label node {shlex.quote(node.name)} {pairs} --overwrite")
    return "\n".join(lines) + "\n"


def render_plugin(nodes: Sequence[Node]) -> str:
    head = ["# NVIDIA device plugin Helm values, for a cluster without the GPU Operator:",
            "#   helm install nvdp nvdp/nvidia-device-plugin -n nvidia-device-plugin "
            "--create-namespace -f THIS_FILE",
            f"# Keys: {PLUGIN_DOCS}", *cdi_comments(nodes)]
    return "\n".join(head) + "\n" + _yaml(plugin_values(nodes))


def render(nodes: Sequence[Node], fmt: str) -> str:
    """`fmt` (one of FORMATS); `all` is the three, each under a title line."""
    parts = {"values": render_values, "labels": render_labels,
             "device-plugin": render_plugin}
    if fmt != "all":
        return parts[fmt](nodes)
    return "\n".join(f"# ===== {name} =====\n{part(nodes)}" for name, part in parts.items())
