"""Role container_toolkit, containerd_package per distro (issue 20): containerd.io
(Docker's, installed with Docker Engine) by default; containerd, the distribution's
own (Ubuntu 22.04/24.04, Debian 12: containerd + runc from the hosts' repositories,
no Docker repository); refused where it cannot work: RHEL (no containerd package),
with Docker CE (it needs containerd.io) and on hosts without systemd (the package
ships only a systemd unit)."""

from __future__ import annotations

import pytest

from gpuprov.facts.apt import AptCandidates, DebPackages
from gpuprov.facts.base import FactView
from gpuprov.facts.containerd import ContainerdDump, parse_toml, read_cri
from gpuprov.facts.files import FileState
from gpuprov.ops.containerd import ContainerdCri
from tests.unit.role_facts import (
    DEBIAN_FAMILY,
    apt_install,
    commands,
    deb,
    file_info,
    policies,
    policy,
)
from tests.unit.role_harness import plan_role, system_for
from tests.unit.test_role_container_toolkit import DOCKER, key
from tests.unit.test_role_container_toolkit_containerd import dump, facts_for

__all__ = ["key"]  # the fixture, used by name

DISTRO_CONTAINERD = ("containerd", "runc")
TOML = "/etc/containerd/config.toml"
CONFIG = 'version = 2\ndisabled_plugins = []\n'


def node_facts(distro: str, *, installed: bool) -> dict:
    facts = facts_for(distro, config=CONFIG, effective=dump(nvidia=True))
    # a node without Docker: the toolkit's packages, containerd + runc when installed
    have = {n: p for n, p in facts[DebPackages()].items() if n not in DOCKER}
    if installed:
        have |= {n: deb(n, "1.6.20~ds1-1") for n in DISTRO_CONTAINERD}
    facts[DebPackages()] = have
    facts[AptCandidates.of(DISTRO_CONTAINERD)] = policies(
        *(policy(n, "1.6.20~ds1-1") for n in DISTRO_CONTAINERD))
    return facts


def plan(distro: str, facts: dict, key: str, *, init: str = "systemd", **vars: object):
    repo = {"url": "", "key": key}
    all_vars = {"container_toolkit_repo": repo, "docker_repo": repo,
                "container_runtime": "containerd", "docker_install": False, **vars}
    return plan_role("container_toolkit", system_for(distro, init=init), facts, vars=all_vars)


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_distro_containerd_installed_from_the_hosts_repositories(distro: str, key: str) -> None:
    result = plan(distro, node_facts(distro, installed=False), key,
                  containerd_package="containerd")
    assert commands(result) == [apt_install(*DISTRO_CONTAINERD)]
    # no Docker repository, no Docker packages
    assert not [label for label in result.labels if "docker" in label.lower()]
    assert result.labels.index("packages containerd, runc") < result.labels.index(
        "containerd CRI config /etc/containerd/config.toml")


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_distro_containerd_installed_is_no_change(distro: str, key: str) -> None:
    result = plan(distro, node_facts(distro, installed=True), key,
                  containerd_package="containerd")
    assert result.changes == []


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_default_is_dockers_containerd_io(distro: str, key: str) -> None:
    result = plan(distro, node_facts(distro, installed=False), key)
    # with docker_install false containerd.io must be there already, as before
    assert "packages containerd, runc" not in result.labels
    assert commands(result) == []


def test_rhel_has_no_containerd_package(key: str) -> None:
    with pytest.raises(Exception, match="no containerd package in its own repositories"):
        plan("rhel9", {}, key, containerd_package="containerd")


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_refused_with_docker_ce(distro: str, key: str) -> None:
    with pytest.raises(Exception, match="Docker CE needs Docker's containerd.io") as err:
        plan(distro, node_facts(distro, installed=False), key,
             containerd_package="containerd", docker_install=True)
    assert "docker_install: false" in str(err.value.hint)  # type: ignore[attr-defined]


def test_refused_without_systemd(key: str) -> None:
    with pytest.raises(Exception, match="ships only a systemd unit, and this host runs "
                                        "sysvinit"):
        plan("debian12", node_facts("debian12", installed=False), key, init="sysvinit",
             containerd_package="containerd")


def test_unknown_package_refused(key: str) -> None:
    with pytest.raises(Exception, match="must be containerd.io .* or containerd"):
        plan("debian12", node_facts("debian12", installed=False), key,
             containerd_package="docker.io")


def test_ignored_on_docker_hosts(key: str) -> None:
    """container_runtime docker: the variable is not read (Docker brings containerd.io)."""
    result = plan("debian12", node_facts("debian12", installed=True), key,
                  container_runtime="docker", containerd_package="containerd")
    assert "packages containerd, runc" not in result.labels


# Debian 12's containerd 1.6: its dump has no enable_cdi key at all (CDI came with 1.7)
DUMP_1_6 = dump(nvidia=True, cdi=False).replace("    enable_cdi = false\n", "")


def test_containerd_1_6_has_no_cdi_and_the_role_says_so(key: str) -> None:
    effective = ContainerdDump().process(DUMP_1_6, 0)
    assert effective is not None and effective.config is not None
    assert effective.config.cdi_supported is False
    # a file without the key says nothing about what containerd supports
    assert read_cri(parse_toml(CONFIG)).cdi_supported is True
    facts = node_facts("debian12", installed=True)
    facts[ContainerdDump()] = effective
    result = plan("debian12", facts, key, containerd_package="containerd")
    assert result.changes == []   # not drift: no config could turn CDI on there
    [op] = [p.op for p in result.ops if isinstance(p.op, ContainerdCri)]
    report = op.report(FactView(facts))
    assert report is not None and "no CDI support" in report["note"]


def test_containerd_1_7_with_cdi_off_is_still_fixed(key: str) -> None:
    facts = node_facts("debian12", installed=True)
    facts[ContainerdDump()] = ContainerdDump().process(dump(nvidia=True, cdi=False), 0)
    result = plan("debian12", facts, key, containerd_package="containerd")
    assert [c.resource for c in result.changes] == ["file /etc/containerd/config.toml"]
    [op] = [p.op for p in result.ops if isinstance(p.op, ContainerdCri)]
    assert op.report(FactView(facts)) is None


def test_cri_disabled_real_dump_hides_the_cri_settings_the_file_decides(key: str) -> None:
    """Real containerd dumps no settings of a plugin it does not load: with CRI
    disabled the nvidia runtime etc. are unknown there, judged from config.toml."""
    cri = "io.containerd.grpc.v1.cri"
    hidden = ContainerdDump().process(
        f'disabled_plugins = ["{cri}"]\nversion = 2\n[plugins]\n'
        '  [plugins."io.containerd.internal.v1.opt"]\n    path = "/opt"\n', 0)
    assert hidden is not None and hidden.config is not None and hidden.config.cri_hidden
    good_file = (f'version = 2\ndisabled_plugins = ["{cri}"]\n'
                 f'[plugins."{cri}"]\nenable_cdi = true\n'
                 f'[plugins."{cri}".containerd]\ndefault_runtime_name = "nvidia"\n'
                 f'[plugins."{cri}".containerd.runtimes.runc.options]\nSystemdCgroup = true\n'
                 f'[plugins."{cri}".containerd.runtimes.nvidia.options]\n'
                 'BinaryName = "/usr/bin/nvidia-container-runtime"\n')
    facts = node_facts("debian12", installed=True)
    facts[FileState(TOML, sudo=True)] = file_info(good_file)
    facts[ContainerdDump()] = hidden
    result = plan("debian12", facts, key, containerd_package="containerd",
                  containerd_nvidia_default=True)
    # only the CRI plugin is fixed, nothing blocked, nvidia-ctk not run again
    assert [c.resource for c in result.changes] == [f"file {TOML}"]
    assert not result.failed
    [step] = result.changes[0].steps
    assert step.stdin is not None
    written = parse_toml(step.stdin.decode())
    assert written["disabled_plugins"] == []
    assert written["plugins"][cri]["containerd"]["default_runtime_name"] == "nvidia"
