"""The k8s_node role over real SSH (issue 20): on a cluster host with
k8s_node_enabled set for the cluster group, the fstab swap line commented
out (the rest byte for byte), the modules file, the sysctl file and live
values in the host's own network namespace; kubelet's absence a note, not a
failure (in apply, drift-check and status); a second apply changes nothing
and drift-check is clean; an
uncommented swap line, an edited sysctl file and a changed live sysctl are
drift and are fixed. A lab host in the same run is left alone (its group
does not enable it).

Fleet hosts share this machine's kernel: its swap list (/proc/swaps) is the
machine's own, so the test refuses to run where the machine has swap on
(`swapoff -a` on a host would turn it off); swapoff itself is pinned by the
unit tests. overlay and br_netfilter are present in this kernel (the fleet's
disks are overlayfs; the bridge sysctls are per network namespace), so no
modprobe runs: the hosts have no CAP_SYS_MODULE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import changed_resources, gpuprov, report

FSTAB = "/etc/fstab"
SYSCTL = "/etc/sysctl.d/99-k8s.conf"
MODULES = "/etc/modules-load.d/k8s.conf"
FSTAB_SWAP = ("# <file system> <mount point> <type> <options> <dump> <pass>\n"
              "UUID=1111 /  ext4  errors=remount-ro 0 1\n"
              "/swap.img\tnone\tswap\tsw\t0\t0\n"
              "tmpfs /tmp tmpfs defaults 0 0\n")
FSTAB_OFF = FSTAB_SWAP.replace("/swap.img\t", "#/swap.img\t")
LIVE = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables",
        "net/bridge/bridge-nf-call-ip6tables")
NOTE = "kubelet, kubeadm, kubectl not installed: install it with your cluster's tooling"

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def hosts(fleet: Fleet):
    if len(Path("/proc/swaps").read_text().splitlines()) > 1:
        pytest.skip("this machine has swap on: the fleet hosts would see (and swapoff) it")
    default = [h for h in fleet.hosts if h.variant == "default"]
    with fleet.fresh([next(h for h in default if "cluster" in h.groups),
                      next(h for h in default if "lab" in h.groups)]) as chosen:
        for host in chosen:
            host.write_file(FSTAB, FSTAB_SWAP)
        yield chosen


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, hosts: list[FleetHost], tmp_path_factory: pytest.TempPathFactory
            ) -> Path:
    work = tmp_path_factory.mktemp("k8s-node")
    inventory = fleet.inventory(hosts)
    inventory["all"]["children"]["cluster"]["vars"] = {"k8s_node_enabled": True}
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (work / "playbooks").mkdir()
    (work / "playbooks" / "site.yml").write_text("- hosts: all\n  roles: [k8s_node]\n")
    return work


def live(host: FleetHost, key: str) -> str:
    return host.exec(f"cat /proc/sys/{key}").stdout.strip()


def test_converge_then_nothing_to_do(hosts: list[FleetHost], workdir: Path) -> None:
    node, lab = hosts
    first = gpuprov("apply", "inventory.yml", "--report", "first.json", cwd=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert node.read_file(FSTAB) == FSTAB_OFF
    assert node.read_file(MODULES).splitlines()[1:] == ["overlay", "br_netfilter"]
    assert "net.ipv4.ip_forward = 1\n" in node.read_file(SYSCTL)
    assert {key: live(node, key) for key in LIVE} == {key: "1" for key in LIVE}
    # kubelet is the cluster tooling's: a note in the footer and the report, no failure
    assert f"note {node.name}: k8s_node: {NOTE}" in first.stdout, first.stdout
    data = report(workdir / "first.json")
    assert any(t.get("data", {}).get("note", "").startswith(NOTE)
               for t in data[node.name]["tasks"])
    # the lab group does not enable it: its fstab and sysctls untouched
    assert lab.read_file(FSTAB) == FSTAB_SWAP and lab.read_file(SYSCTL) is None
    assert data[lab.name]["changed"] == 0

    again = gpuprov("apply", "inventory.yml", "--report", "second.json", cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {n: h["changed"] for n, h in report(workdir / "second.json").items()} == \
        {node.name: 0, lab.name: 0}
    drift = gpuprov("drift-check", "inventory.yml", "--format", "json", cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    notes = json.loads(drift.stdout)["hosts"][node.name]["notes"]
    assert [n.startswith(f"k8s_node: {NOTE}") for n in notes] == [True]
    # gpuprov status says the same (its exit code is about GPU health: not asserted)
    status = gpuprov("status", "inventory.yml", "--format", "json", cwd=workdir)
    hosts = json.loads(status.stdout)["hosts"]
    assert [n.startswith(f"k8s_node: {NOTE}") for n in hosts[node.name]["notes"]] == [True]
    assert hosts[lab.name]["notes"] == []


def test_tampering_is_drift_and_is_fixed(hosts: list[FleetHost], workdir: Path) -> None:
    node, _lab = hosts
    node.write_file(FSTAB, FSTAB_SWAP)
    node.exec(f"sed -i 's/ip_forward = 1/ip_forward = 0/' {SYSCTL}")
    node.exec("sysctl -qw net.bridge.bridge-nf-call-iptables=0")
    drift = gpuprov("drift-check", "inventory.yml", "--format", "json", cwd=workdir)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    resources = {d["resource"] for d in json.loads(drift.stdout)["hosts"][node.name]["drift"]}
    assert resources == {
        f"file {FSTAB}", f"file {SYSCTL}",
        "command sysctl -w net.bridge.bridge-nf-call-iptables=1 (live value differs)"}

    fixed = gpuprov("apply", "inventory.yml", "--report", "fixed.json", cwd=workdir)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert changed_resources(report(workdir / "fixed.json")[node.name]) == resources
    assert node.read_file(FSTAB) == FSTAB_OFF
    assert {key: live(node, key) for key in LIVE} == {key: "1" for key in LIVE}
    clean = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert clean.returncode == 0, clean.stdout + clean.stderr
