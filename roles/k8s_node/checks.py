"""What k8s_node reads and reports beyond plain files: the active systemd swap
units, the fstab with its swap lines commented out, and the presence of the
cluster tools it deliberately does not install."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuprov.command import Command
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.system import CommandPath
from gpuprov.ops.base import Change, Op, operation

KUBE_TOOLS = ("kubelet", "kubeadm", "kubectl")
INSTALL_HINT = ("install it with your cluster's tooling (kubeadm docs: "
                "https://kubernetes.io/docs/setup/production-environment/tools/kubeadm/"
                "install-kubeadm/)")


@dataclass(frozen=True)
class ActiveSwapUnits(Fact["tuple[str, ...]"]):
    """systemd's active *.swap units (fstab entries, swap files, zram), by name."""

    def command(self) -> Command:
        return Command("systemctl", "list-units", "--type=swap", "--state=active",
                       "--no-legend", "--plain")

    def process(self, output: str, exit_code: int) -> tuple[str, ...]:
        if exit_code != 0:
            return ()
        names = (line.split()[0] for line in output.splitlines() if line.split())
        return tuple(sorted(n for n in names if n.endswith(".swap")))


def swap_commented(fstab: bytes) -> bytes:
    """fstab with every active swap entry commented out ("#" prepended), every
    other byte as it was: the same line endings, the same final newline or not."""
    lines = fstab.split(b"\n")
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith(b"#") and fields[2] == b"swap":
            line = b"#" + line
        out.append(line)
    return b"\n".join(out)


@operation
class KubeTools(Op):
    """Never changes anything: reports which of kubelet/kubeadm/kubectl are
    installed and, when one is missing, a note saying how to get it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.label = "check kubelet/kubeadm/kubectl"

    def facts(self) -> Sequence[Fact[Any]]:
        return [CommandPath(t) for t in KUBE_TOOLS]

    def plan(self, facts: FactView) -> list[Change]:
        return []

    def report(self, facts: FactView) -> dict[str, Any] | None:
        found = {t: facts[CommandPath(t)] for t in KUBE_TOOLS}
        data: dict[str, Any] = {"kubernetes_tools": found}
        missing = [t for t, path in found.items() if path is None]
        if missing:
            data["note"] = f"{', '.join(missing)} not installed: {INSTALL_HINT}"
        return data
