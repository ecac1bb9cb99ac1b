"""service(): systemd and sysvinit, from canned ServiceState outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.facts.base import FactView
from gpuprov.facts.docker import ContainerInfo, ContainerState, ContainerStatus
from gpuprov.facts.services import ServiceInfo, ServiceState
from gpuprov.ops.services import service

DATA = Path(__file__).parent / "data" / "facts"


def plan(op, canned: str):
    [fact] = op.facts()
    return op.plan(FactView({fact: fact.process((DATA / canned).read_text(), 0)}))


def shells(changes) -> list[str]:
    return [s.command.shell() for c in changes for s in c.steps]


def test_systemd_converged() -> None:
    assert plan(service("docker", "started", enabled=True), "systemctl.docker-running") == []
    assert plan(service("docker", None, enabled=None), "systemctl.docker-running") == []


def test_systemd_start_and_enable() -> None:
    changes = plan(service("containerd", "started", enabled=True),
                   "systemctl.containerd-stopped-disabled")
    assert shells(changes) == ["systemctl enable containerd", "systemctl start containerd"]
    enable, start = changes
    assert (enable.resource, enable.action) == ("service containerd", "enable")
    assert enable.diff.before == "disabled\n" and enable.diff.after == "enabled\n"
    assert (start.action, start.summary) == ("start", "start containerd (systemd)")
    assert start.invalidates == (ServiceState,)


def test_systemd_stop_disable() -> None:
    assert shells(plan(service("docker", "stopped", enabled=False),
                       "systemctl.docker-running")) == [
        "systemctl disable docker", "systemctl stop docker"]


def test_static_unit_is_not_enabled() -> None:
    # static units cannot be enabled: no change, not an error
    assert shells(plan(service("nvidia-persistenced", "started", enabled=True),
                       "systemctl.nvidia-persistenced-static")) == [
        "systemctl start nvidia-persistenced"]


@pytest.mark.parametrize(("state", "canned", "expected"), [
    ("restarted", "systemctl.docker-running", "systemctl restart docker"),
    ("reloaded", "systemctl.docker-running", "systemctl reload docker"),
    ("reloaded", "systemctl.containerd-stopped-disabled", "systemctl start containerd"),
    ("restarted", "sysvinit.docker-running", "service docker restart"),
])
def test_handler_actions_always_change(state: str, canned: str, expected: str) -> None:
    name = "containerd" if "containerd" in canned else "docker"
    assert shells(plan(service(name, state), canned)) == [expected]


def test_sysvinit() -> None:
    assert plan(service("docker", "started", enabled=True), "sysvinit.docker-running") == []
    assert shells(plan(service("docker", "started", enabled=True),
                       "sysvinit.docker-disabled")) == [
        "update-rc.d docker enable", "service docker start"]
    # a script without any rc links needs its default links, not `enable`
    assert shells(plan(service("ssh", "started", enabled=True),
                       "sysvinit.ssh-stopped-nolinks")) == [
        "update-rc.d ssh defaults", "service ssh start"]
    assert shells(plan(service("docker", "stopped", enabled=False),
                       "sysvinit.docker-running")) == [
        "update-rc.d docker disable", "service docker stop"]


@pytest.mark.parametrize("canned", ["systemctl.missing", "sysvinit.missing"])
def test_missing_service_is_unknown_in_check_mode(canned: str) -> None:
    changes = plan(service("docker", "started", enabled=True), canned)
    assert [c.action for c in changes] == ["enable", "start"]
    assert all(c.unknown and "docker is not installed" in c.unknown for c in changes)
    assert plan(service("docker", "stopped"), canned) == []


def test_quoting_and_bad_state() -> None:
    assert shells(plan(service("my unit", "restarted"), "systemctl.docker-running")) == [
        "systemctl restart 'my unit'"]
    with pytest.raises(ValueError):
        service("docker", "running")
    assert service("docker").facts() == [ServiceState("docker")]


@pytest.mark.parametrize("canned", ["systemctl.missing", "sysvinit.missing"])
def test_a_missing_service_needs_no_disabling(canned: str) -> None:
    # nothing installed is nothing that starts at boot (jupyter_enabled: false on a new host)
    assert plan(service("docker", "stopped", enabled=False), canned) == []


def test_also_invalidates_names_what_starting_it_changes() -> None:
    changes = plan(service("containerd", "started", enabled=True,
                           also_invalidates=(ContainerState,)),
                   "systemctl.containerd-stopped-disabled")
    assert [c.invalidates for c in changes] == [(ServiceState, ContainerState)] * 2


# ---------------------------------------------------------------- a service that runs a container

LINKS = ("/etc/rc2.d/S01app", "/etc/rc0.d/K01app")
SYSV = ServiceInfo("app", "sysvinit", True, None, True, links=LINKS)


def container(running: bool | None, docker: str = "ok") -> ContainerStatus:
    if running is None:
        return ContainerStatus(docker)
    return ContainerStatus(docker, ContainerInfo(running, "running" if running else "exited",
                                                 (), frozenset()))


def plan_with(op, info: ServiceInfo, state: ContainerStatus):
    return op.plan(FactView({ServiceState("app", sysv_status=False): info,
                             ContainerState("app"): state}))


def test_container_service_reads_no_init_script_status() -> None:
    op = service("app", "started", enabled=True, container="app")
    assert op.facts() == [ServiceState("app", sysv_status=False), ContainerState("app")]
    assert op.invalidates == (ServiceState, ContainerState)
    also = service("app", "started", container="app", also_invalidates=(ContainerState,))
    assert also.invalidates == (ServiceState, ContainerState)


def test_container_service_under_sysvinit_runs_when_its_container_does() -> None:
    op = service("app", "started", enabled=True, container="app")
    assert plan_with(op, SYSV, container(True)) == []
    for state in (container(False), container(None), container(None, "down"),
                  ContainerStatus("absent", message="docker is not installed")):
        [start] = plan_with(op, SYSV, state)
        assert shells([start]) == ["service app start"]
        assert start.diff.before == "stopped\n"
        assert start.invalidates == (ServiceState, ContainerState)
    stop = service("app", "stopped", container="app")
    assert plan_with(stop, SYSV, container(False)) == []
    assert shells(plan_with(stop, SYSV, container(True))) == ["service app stop"]
    disabled = ServiceInfo("app", "sysvinit", True, None, False, links=("/etc/rc2.d/K01app",))
    assert shells(plan_with(op, disabled, container(True))) == ["update-rc.d app enable"]


def test_container_service_under_systemd_is_systemds_word() -> None:
    op = service("app", "started", enabled=True, container="app")
    active = ServiceState("app", sysv_status=False).process(
        (DATA / "systemctl.docker-running").read_text(), 0)
    # the unit is what systemd starts at boot; the container's own op recreates it
    assert plan_with(op, active, container(False)) == []
    stopped = ServiceState("app", sysv_status=False).process(
        (DATA / "systemctl.containerd-stopped-disabled").read_text(), 0)
    assert shells(plan_with(op, stopped, container(True))) == [
        "systemctl enable app", "systemctl start app"]
