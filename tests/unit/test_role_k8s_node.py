"""Role k8s_node against canned facts, per distro and init system: swap off
and kept off (the fstab diff, the masked units), the modules, the sysctls
(file, handler, live drift), the kubelet note, idempotence, and its switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuprov.engine.context import RoleFailed
from gpuprov.facts.base import FactView
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.facts.system import CommandPath, ShellTest
from gpuprov.model.playbook import load_playbook
from gpuprov.model.yamlfile import load_yaml
from tests.unit.role_facts import ALL_DISTROS, commands, file_info, write_cmd
from tests.unit.role_harness import plan_role, role_module, system_for

REPO = Path(__file__).resolve().parents[2]
checks = role_module("k8s_node", "checks")

FSTAB = "/etc/fstab"
MODULES = "/etc/modules-load.d/k8s.conf"
SYSCTL = "/etc/sysctl.d/99-k8s.conf"
HEADER = "# Managed by gpuprov (role k8s_node): local edits are overwritten.\n"
MODULES_TEXT = HEADER + "overlay\nbr_netfilter\n"
SYSCTL_TEXT = HEADER + ("net.bridge.bridge-nf-call-iptables = 1\n"
                        "net.bridge.bridge-nf-call-ip6tables = 1\n"
                        "net.ipv4.ip_forward = 1\n")
FSTAB_SWAP = (b"# /etc/fstab: static file system information.\n"
              b"UUID=abcd /  ext4  errors=remount-ro 0 1\n"
              b"/swap.img\tnone\tswap\tsw\t0\t0\n"
              b"UUID=ef01 none swap sw 0 0\r\n"
              b"#/old.swap none swap sw 0 0\n"
              b"tmpfs /tmp tmpfs defaults 0 0")     # no final newline: kept so
FSTAB_OFF = (b"# /etc/fstab: static file system information.\n"
             b"UUID=abcd /  ext4  errors=remount-ro 0 1\n"
             b"#/swap.img\tnone\tswap\tsw\t0\t0\n"
             b"#UUID=ef01 none swap sw 0 0\r\n"
             b"#/old.swap none swap sw 0 0\n"
             b"tmpfs /tmp tmpfs defaults 0 0")
SWAPS = ShellTest("tail -n +2 /proc/swaps | grep -q .")
LOADED = {"overlay": ShellTest("test -d /sys/module/overlay || grep -qw overlay /proc/filesystems"),
          "br_netfilter": ShellTest(
              "test -d /sys/module/br_netfilter || test -d /proc/sys/net/bridge")}
LIVE = {k: ShellTest(f'test "$(cat /proc/sys/{p})" = 1') for k, p in (
    ("net.bridge.bridge-nf-call-iptables", "net/bridge/bridge-nf-call-iptables"),
    ("net.bridge.bridge-nf-call-ip6tables", "net/bridge/bridge-nf-call-ip6tables"),
    ("net.ipv4.ip_forward", "net/ipv4/ip_forward"))}
DIR = FileInfo(type="directory", owner="root", group="root", mode="0755", size=4096, uid=0,
               gid=0)
TOOLS = ("kubelet", "kubeadm", "kubectl")
INITS = ("systemd", "sysvinit")


def host(*, fstab: bytes | None = FSTAB_OFF, swap_on: bool = False, units: tuple = (),
         loaded: bool = True, files: bool = True, live: bool = True,
         tools: bool = False, dirs: bool = True) -> dict[Any, Any]:
    facts: dict[Any, Any] = {
        FileState(FSTAB): None if fstab is None else file_info(fstab),
        checks.ActiveSwapUnits(): units, SWAPS: swap_on,
        FileState(MODULES): file_info(MODULES_TEXT) if files else None,
        FileState(SYSCTL): file_info(SYSCTL_TEXT) if files else None,
        FileState("/etc/modules-load.d", content=False): DIR if dirs else None,
        FileState("/etc/sysctl.d", content=False): DIR if dirs else None,
    }
    facts.update({test: loaded for test in LOADED.values()})
    facts.update({test: live for test in LIVE.values()})
    facts.update({CommandPath(t): f"/usr/bin/{t}" if tools else None for t in TOOLS})
    return facts


def run(facts: dict[Any, Any], distro: str = "ubuntu2404", init: str = "systemd",
        **vars: Any):
    return plan_role("k8s_node", system_for(distro, init=init), facts,
                     vars={"k8s_node_enabled": True, **vars})


FRESH_SYSTEMD = [
    write_cmd(FSTAB), "systemctl mask -- dev-sda2.swap swap.img.swap", "swapoff -a",
    write_cmd(MODULES), "modprobe overlay", "modprobe br_netfilter", write_cmd(SYSCTL),
    "sysctl -w net.bridge.bridge-nf-call-iptables=1",
    "sysctl -w net.bridge.bridge-nf-call-ip6tables=1", "sysctl -w net.ipv4.ip_forward=1"]


@pytest.mark.parametrize("distro", ALL_DISTROS)
@pytest.mark.parametrize("init", INITS)
def test_fresh_host_gets_every_prerequisite(distro: str, init: str) -> None:
    facts = host(fstab=FSTAB_SWAP, swap_on=True, units=("dev-sda2.swap", "swap.img.swap"),
                 loaded=False, files=False, live=False)
    plan = run(facts, distro, init)
    expected = [c for c in FRESH_SYSTEMD if init == "systemd" or not c.startswith("systemctl")]
    assert commands(plan) == expected
    sysctl = next(c for c in plan.changes if c.resource == f"file {SYSCTL}")
    assert sysctl.notify == ("apply k8s sysctls",)
    assert sysctl.steps[0].stdin == SYSCTL_TEXT.encode()
    modules = next(c for c in plan.changes if c.resource == f"file {MODULES}")
    assert modules.steps[0].stdin == MODULES_TEXT.encode()


@pytest.mark.parametrize("distro", ALL_DISTROS)
@pytest.mark.parametrize("init", INITS)
def test_converged_host_has_no_change(distro: str, init: str) -> None:
    # the second apply: swap commented and off, modules loaded, sysctls right
    plan = run(host(), distro, init)
    assert plan.changes == [] and plan.commands == []
    assert plan.labels[-1] == "check kubelet/kubeadm/kubectl"


def test_missing_directories_are_made_first() -> None:
    # a minimal Debian (the fleet's base) has neither directory
    plan = run(host(files=False, dirs=False))
    labels = plan.labels
    assert labels.index("directory /etc/modules-load.d") + 1 == labels.index(f"file {MODULES}")
    assert labels.index("directory /etc/sysctl.d") + 1 == labels.index(f"file {SYSCTL}")
    assert [c.resource for c in plan.changes] == [
        "directory /etc/modules-load.d", f"file {MODULES}", "directory /etc/sysctl.d",
        f"file {SYSCTL}"]


def test_fstab_swap_lines_are_commented_and_nothing_else_changes() -> None:
    plan = run(host(fstab=FSTAB_SWAP))
    [change] = plan.changes
    assert change.resource == f"file {FSTAB}" and change.action == "update"
    assert change.steps[0].stdin == FSTAB_OFF
    assert change.notify == ()
    assert checks.swap_commented(FSTAB_OFF) == FSTAB_OFF     # idempotent


def test_fstab_keeps_its_owner_and_mode() -> None:
    facts = host(fstab=FSTAB_SWAP)
    facts[FileState(FSTAB)] = file_info(FSTAB_SWAP, mode="0664")
    assert commands(run(facts))[0] == write_cmd(FSTAB, mode="0664")


def test_no_fstab_is_left_absent() -> None:
    assert run(host(fstab=None)).changes == []


def test_unreadable_fstab_is_a_clear_failure() -> None:
    facts = host()
    facts[FileState(FSTAB)] = file_info(b"x")
    facts[FileState(FSTAB)] = type(facts[FileState(FSTAB)])(
        type="other", owner="root", group="root", mode="0644", size=0, uid=0, gid=0)
    with pytest.raises(RoleFailed, match="comment out its swap lines by hand"):
        run(facts)


@pytest.mark.parametrize("init", INITS)
def test_swap_turned_on_again_is_turned_off(init: str) -> None:
    plan = run(host(swap_on=True), init=init)
    assert commands(plan) == ["swapoff -a"]
    assert plan.changes[0].summary == "run swapoff -a (only_if-test succeeded)"


def test_active_swap_units_are_masked_under_systemd_only() -> None:
    assert commands(run(host(units=("swapfile.swap",)))) == [
        "systemctl mask -- swapfile.swap"]
    assert commands(run(host(units=("swapfile.swap",)), init="sysvinit")) == []


def test_a_changed_live_sysctl_is_set_again() -> None:
    facts = host()
    facts[LIVE["net.ipv4.ip_forward"]] = False
    plan = run(facts)
    assert commands(plan) == ["sysctl -w net.ipv4.ip_forward=1"]


def test_an_edited_sysctl_file_is_restored_and_applied_by_the_handler() -> None:
    facts = host()
    facts[FileState(SYSCTL)] = file_info(SYSCTL_TEXT.replace("ip_forward = 1", "ip_forward = 0"))
    plan = run(facts)
    [change] = plan.changes
    assert change.notify == ("apply k8s sysctls",)
    assert "-net.ipv4.ip_forward = 0\n+net.ipv4.ip_forward = 1" in change.diff.unified()
    handler = plan_role("k8s_node", system_for("rhel9"), {}, vars={"k8s_node_enabled": True},
                        handler="apply k8s sysctls")
    assert handler.commands == [f"sysctl -p {SYSCTL}"]


def test_a_loaded_module_is_not_probed_again() -> None:
    facts = host()
    facts[LOADED["br_netfilter"]] = False
    assert commands(run(facts)) == ["modprobe br_netfilter"]


# ---------------------------------------------------------------- the kubelet check

def report(facts: dict[Any, Any]) -> dict[str, Any] | None:
    op = run(facts).ops[-1].op
    return op.report(FactView(facts))


def test_missing_kube_tools_are_a_note_not_a_failure() -> None:
    data = report(host(tools=False))
    assert data == {
        "kubernetes_tools": {"kubelet": None, "kubeadm": None, "kubectl": None},
        "note": "kubelet, kubeadm, kubectl not installed: install it with your cluster's "
                "tooling (kubeadm docs: https://kubernetes.io/docs/setup/"
                "production-environment/tools/kubeadm/install-kubeadm/)"}


def test_installed_kube_tools_give_no_note() -> None:
    data = report(host(tools=True))
    assert data == {"kubernetes_tools": {t: f"/usr/bin/{t}" for t in TOOLS}}


def test_active_swap_units_fact_reads_systemctl() -> None:
    fact = checks.ActiveSwapUnits()
    assert fact.command().display() == (
        "systemctl list-units --type=swap --state=active --no-legend --plain")
    out = "dev-sda2.swap loaded active active /dev/sda2\nswap.img.swap loaded active active x\n"
    assert fact.process(out, 0) == ("dev-sda2.swap", "swap.img.swap")
    assert fact.process("", 1) == ()


# ---------------------------------------------------------------- the switch

def test_off_by_default_leaves_the_host_alone() -> None:
    plan = plan_role("k8s_node", system_for("ubuntu2204"), {})
    assert plan.ops == [] and plan.skipped == "k8s_node_enabled is false"


def test_extra_vars_strings_and_bad_values() -> None:
    assert run(host(), k8s_node_enabled="true").changes == []
    assert plan_role("k8s_node", system_for("debian12"), {},
                     vars={"k8s_node_enabled": "false"}).skipped == "k8s_node_enabled is false"
    with pytest.raises(RoleFailed, match="k8s_node_enabled='maybe'.*must be true or false"):
        run(host(), k8s_node_enabled="maybe")


def test_site_yml_and_the_example_inventory_enable_it_for_the_cluster_group() -> None:
    first = load_playbook(REPO / "playbooks" / "site.yml")[0]
    names = [r.name for r in first.roles]
    assert names.index("nvidia_driver") < names.index("k8s_node") < names.index(
        "container_toolkit")
    assert "\nk8s_node_enabled: false\n" in (REPO / "roles/k8s_node/defaults.yml").read_text()
    inventory = load_yaml(REPO / "inventory.example.yml")
    assert inventory["all"]["children"]["cluster"]["vars"]["k8s_node_enabled"] is True
    assert "k8s_node_enabled" not in inventory["all"]["children"]["lab"]["vars"]
