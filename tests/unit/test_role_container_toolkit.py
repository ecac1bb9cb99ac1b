"""Role container_toolkit against canned facts, per distro: Docker Engine and
NVIDIA's repository with their keys, the four toolkit packages pinned to one
version, the nvidia runtime merged into daemon.json (or containerd's config
through nvidia-ctk), the docker group's members, and the restart handlers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from gpuprov.facts.apt import (
    AptCandidates,
    AptKeyring,
    AptSources,
    DebHeld,
    DebPackage,
    DebPackages,
    DpkgInterrupted,
)
from gpuprov.facts.dnf import (
    DnfAvailable,
    DnfRepoFiles,
    DnfVersionlock,
    RpmPackage,
    RpmPackages,
    VersionlockInfo,
)
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.facts.services import ServiceState
from gpuprov.facts.users import ExistingUsers, GroupInfo, GroupMembers
from gpuprov.ops import keys
from gpuprov.ops.file_plan import FileOpError
from gpuprov.ops.users import UserError
from tests.unit.role_facts import (
    ALL_DISTROS,
    ARMORED_KEY,
    ARMORED_SHA256,
    DEBIAN_FAMILY,
    DNF,
    KEY_BYTES,
    KEY_SHA256,
    REAL_FPR,
    REAL_KEY,
    apt_install,
    apt_mark,
    apt_source_update,
    commands,
    deb,
    file_info,
    held,
    make_key_file,
    ops_until_failure,
    policies,
    policy,
    rpm,
    rpms,
    service_info,
    write_cmd,
)
from tests.unit.role_harness import MissingFacts, RolePlan, plan_role, system_for

TOOLKIT = ("nvidia-container-toolkit", "nvidia-container-toolkit-base",
           "libnvidia-container-tools", "libnvidia-container1")
DOCKER = ("docker-ce", "docker-ce-cli", "containerd.io")
VERSION = "1.18.0-1"
DOCKER_DEB = "5:28.5.1-1~{id}.{version}~{codename}"

DOCKER_KEYRING = "/etc/apt/keyrings/docker.gpg"
DOCKER_LIST = "/etc/apt/sources.list.d/docker.list"
TK_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
TK_LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
TK_LIST_TEXT = ("# Managed by gpuprov: local edits are overwritten.\n"
                f"deb [signed-by={TK_KEYRING}] "
                "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n")
DOCKER_RPM_KEY = "/etc/pki/rpm-gpg/RPM-GPG-KEY-docker-ce-stable"
DOCKER_REPO = "/etc/yum.repos.d/docker-ce-stable.repo"
DOCKER_REPO_TEXT = ("# Managed by gpuprov: local edits are overwritten.\n[docker-ce-stable]\n"
                    "name=Docker CE Stable\n"
                    "baseurl=https://download.docker.com/linux/rhel/$releasever/$basearch/stable\n"
                    f"enabled=1\ngpgcheck=1\ngpgkey=file://{DOCKER_RPM_KEY}\n")
TK_RPM_KEY = "/etc/pki/rpm-gpg/RPM-GPG-KEY-nvidia-container-toolkit"
TK_REPO = "/etc/yum.repos.d/nvidia-container-toolkit.repo"
TK_REPO_TEXT = ("# Managed by gpuprov: local edits are overwritten.\n[nvidia-container-toolkit]\n"
                "name=NVIDIA Container Toolkit\n"
                "baseurl=https://nvidia.github.io/libnvidia-container/stable/rpm/$basearch\n"
                f"enabled=1\ngpgcheck=1\ngpgkey=file://{TK_RPM_KEY}\nrepo_gpgcheck=1\n")

ETC_DOCKER = FileState("/etc/docker", content=False)
ETC_DOCKER_OK = FileInfo("directory", "root", "root", "0755", 4096, 0, 0)
DAEMON = "/etc/docker/daemon.json"
VALIDATE = "dockerd --validate --config-file {}"
NVIDIA_RUNTIME = {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
DAEMON_TEXT = ('{\n    "runtimes": {\n        "nvidia": {\n            "args": [],\n'
               '            "path": "nvidia-container-runtime"\n        }\n    }\n}\n')
CODENAME = {"ubuntu2204": ("ubuntu", "22.04", "jammy"), "ubuntu2404": ("ubuntu", "24.04", "noble"),
            "debian12": ("debian", "12", "bookworm")}


@pytest.fixture
def key(tmp_path: Path):
    keys.clear_cache()
    yield make_key_file(tmp_path)
    keys.clear_cache()


def run(distro: str, facts: dict, key: str | None, *, check: bool = False, handler=None,
        **vars: object) -> RolePlan:
    repo = {"url": "", "key": key}
    all_vars = {"container_toolkit_repo": repo, "docker_repo": repo, **vars}
    return plan_role("container_toolkit", system_for(distro), facts, vars=all_vars, check=check,
                     handler=handler)


def docker_list_text(distro: str, arch: str = "amd64") -> str:
    os_id, _, codename = CODENAME[distro]
    return ("# Managed by gpuprov: local edits are overwritten.\n"
            f"deb [arch={arch} signed-by={DOCKER_KEYRING}] "
            f"https://download.docker.com/linux/{os_id} {codename} stable\n")


def docker_version(distro: str) -> str:
    os_id, version, codename = CODENAME[distro]
    return DOCKER_DEB.format(id=os_id, version=version, codename=codename)


# ---------------------------------------------------------------- canned hosts

def deb_facts(distro: str, packages: Iterable[DebPackage] = (), *, configured: bool = False,
              daemon: bytes | str | None = None, docker_running: bool | None = None) -> dict:
    """configured: both repositories and keys in place, /etc/docker exists.
    docker_running None: docker is not installed yet."""
    packages = [deb("bash", "5.2.21-2"), *packages]
    return {
        DebPackages(): {p.name: p for p in packages},
        DebHeld(): held(*packages),
        DpkgInterrupted(): False,
        AptSources(): {DOCKER_LIST: docker_list_text(distro), TK_LIST: TK_LIST_TEXT}
                      if configured else {},
        AptKeyring(DOCKER_KEYRING): KEY_SHA256 if configured else None,
        AptKeyring(TK_KEYRING): KEY_SHA256 if configured else None,
        AptCandidates.of(DOCKER): policies(*(policy(n, docker_version(distro)) for n in DOCKER)),
        AptCandidates.of(TOOLKIT): policies(*(policy(n, "1.18.0-1", "1.17.8-1", "1.17.0-1")
                                              for n in TOOLKIT)),
        ETC_DOCKER: ETC_DOCKER_OK if configured else None,
        FileState(DAEMON): None if daemon is None else file_info(daemon),
        ServiceState("docker"): docker_service(docker_running),
        GroupMembers("docker"): docker_group(docker_running),
    }


def docker_group(running: bool | None, *members: str) -> GroupInfo | None:
    """The docker group, created by docker-ce: absent while docker is not installed."""
    return None if running is None else GroupInfo("docker", 989, members)


def docker_service(running: bool | None):
    if running is None:
        return service_info("docker", exists=False)
    return service_info("docker", running=running, enabled=running)


def rhel_facts(packages: Iterable[RpmPackage] = (), *, configured: bool = False,
               locks: dict[str, str] | None = None, plugin: bool = False,
               daemon: bytes | str | None = None, docker_running: bool | None = None) -> dict:
    return {
        RpmPackages(): rpms(rpm("bash", "5.1.8", "9.el9"), *packages),
        DnfRepoFiles(): {DOCKER_REPO: DOCKER_REPO_TEXT, TK_REPO: TK_REPO_TEXT}
                        if configured else {},
        AptKeyring(DOCKER_RPM_KEY): ARMORED_SHA256 if configured else None,
        AptKeyring(TK_RPM_KEY): ARMORED_SHA256 if configured else None,
        DnfAvailable(tuple(sorted(DOCKER))): rpms(*(rpm(n, "28.5.1", "1.el9", epoch=3)
                                                    for n in DOCKER)),
        DnfAvailable(tuple(sorted(TOOLKIT))): rpms(*(rpm(n, v, "1") for n in TOOLKIT
                                                     for v in ("1.17.8", "1.18.0"))),
        DnfVersionlock(): VersionlockInfo(plugin, dict(locks or {})),
        ETC_DOCKER: ETC_DOCKER_OK if configured else None,
        FileState(DAEMON): None if daemon is None else file_info(daemon),
        ServiceState("docker"): docker_service(docker_running),
        GroupMembers("docker"): docker_group(docker_running),
    }


def toolkit_debs(version: str = VERSION, hold: bool = True) -> list[DebPackage]:
    return [deb(n, version, held=hold) for n in TOOLKIT]


def toolkit_rpms(version: str = "1.18.0") -> list[RpmPackage]:
    return [rpm(n, version, "1") for n in TOOLKIT]


def docker_debs(distro: str) -> list[DebPackage]:
    return [deb(n, docker_version(distro)) for n in DOCKER]


def fresh(distro: str) -> dict:
    return rhel_facts() if distro == "rhel9" else deb_facts(distro)


LOCKS = {n: f"{n}-0:1.18.0-1.*" for n in TOOLKIT}


def converged(distro: str, daemon: str = DAEMON_TEXT) -> dict:
    if distro == "rhel9":
        return rhel_facts([*(rpm(n, "28.5.1", "1.el9", epoch=3) for n in DOCKER),
                           *toolkit_rpms()], configured=True, locks=LOCKS, plugin=True,
                          daemon=daemon, docker_running=True)
    return deb_facts(distro, [*docker_debs(distro), *toolkit_debs()], configured=True,
                     daemon=daemon, docker_running=True)


DAEMON_WRITE = write_cmd(DAEMON, validate=VALIDATE)
DEB_TOOLKIT = [apt_install(*(f"{n}={VERSION}" for n in TOOLKIT)), apt_mark("hold", *TOOLKIT)]
RHEL_TOOLKIT = [f"{DNF} install -- " + " ".join(f"{n}-{VERSION}" for n in TOOLKIT),
                # the plugin once, with the first lock
                f"{DNF} install -- python3-dnf-plugin-versionlock"]
RHEL_TOOLKIT += [f"{DNF} versionlock add -- {n}-{VERSION}" for n in TOOLKIT]


def fresh_commands(distro: str) -> list[str]:
    if distro == "rhel9":
        return [
            write_cmd(DOCKER_RPM_KEY, mkdir=True),
            write_cmd(DOCKER_REPO, mkdir=True),
            "dnf -q makecache --repo docker-ce-stable",
            f"{DNF} install -- docker-ce docker-ce-cli containerd.io",
            write_cmd(TK_RPM_KEY, mkdir=True),
            write_cmd(TK_REPO, mkdir=True),
            "dnf -q makecache --repo nvidia-container-toolkit",
            *RHEL_TOOLKIT,
            "mkdir -p -- /etc/docker && [ -d /etc/docker ] && chown -h root:root -- /etc/docker && "
        "chmod 0755 -- /etc/docker",
            DAEMON_WRITE,
            "systemctl enable docker",
            "systemctl start docker",
        ]
    return [
        write_cmd(DOCKER_KEYRING, mkdir=True),
        write_cmd(DOCKER_LIST, mkdir=True),
        apt_source_update(DOCKER_LIST),
        apt_install(*DOCKER),
        write_cmd(TK_KEYRING, mkdir=True),
        write_cmd(TK_LIST, mkdir=True),
        apt_source_update(TK_LIST),
        *DEB_TOOLKIT,
        "mkdir -p -- /etc/docker && [ -d /etc/docker ] && chown -h root:root -- /etc/docker && "
        "chmod 0755 -- /etc/docker",
        DAEMON_WRITE,
        "systemctl enable docker",
        "systemctl start docker",
    ]


# ---------------------------------------------------------------- fresh / converged

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_fresh_install(distro: str, key: str) -> None:
    plan = run(distro, fresh(distro), key)
    assert commands(plan) == fresh_commands(distro)
    daemon = next(c for c in plan.changes if c.resource == f"file {DAEMON}")
    assert daemon.action == "create"
    assert daemon.steps[0].stdin == DAEMON_TEXT.encode()
    assert daemon.notify == ("restart docker",)
    # docker comes with docker-ce in this very run: the service changes say so
    unknown = [c.unknown for c in plan.changes if c.resource == "service docker"]
    assert unknown == ["docker is not installed (systemd): depends on the package that "
                       "provides it"] * 2
    assert not any(c.reboot_required for c in plan.changes)


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_fresh_install_apt_repositories(distro: str, key: str) -> None:
    plan = run(distro, fresh(distro), key)
    by_resource = {c.resource: c for c in plan.changes}
    assert by_resource[f"apt keyring {DOCKER_KEYRING}"].steps[0].stdin == KEY_BYTES
    assert by_resource[f"apt keyring {TK_KEYRING}"].steps[0].stdin == KEY_BYTES
    assert by_resource[f"apt source {DOCKER_LIST}"].diff.after == docker_list_text(distro)
    assert by_resource[f"apt source {TK_LIST}"].diff.after == TK_LIST_TEXT
    toolkit = by_resource[f"packages {', '.join(TOOLKIT)}"]
    assert toolkit.diff.after == "".join(f"{n} {VERSION} (held)\n" for n in TOOLKIT)
    assert toolkit.summary == "; ".join(f"install {n}={VERSION}" for n in TOOLKIT)


def test_fresh_install_dnf_repositories(key: str) -> None:
    plan = run("rhel9", fresh("rhel9"), key)
    by_resource = {c.resource: c for c in plan.changes}
    assert by_resource[f"rpm key {DOCKER_RPM_KEY}"].steps[0].stdin == ARMORED_KEY.encode()
    assert by_resource[f"rpm key {TK_RPM_KEY}"].steps[0].stdin == ARMORED_KEY.encode()
    assert by_resource[f"dnf repo {DOCKER_REPO}"].diff.after == DOCKER_REPO_TEXT
    assert by_resource[f"dnf repo {TK_REPO}"].diff.after == TK_REPO_TEXT
    locks = [c for c in plan.changes if c.resource.startswith("versionlock ")]
    assert [c.diff.after for c in locks] == [f"{n}-{VERSION}\n" for n in TOOLKIT]


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_converged_host_has_no_change(distro: str, key: str) -> None:
    plan = run(distro, converged(distro), key)
    assert plan.changes == []
    if distro == "rhel9":
        repos = ["dnf repository docker-ce-stable", "packages docker-ce, docker-ce-cli, "
                 "containerd.io", "dnf repository nvidia-container-toolkit",
                 f"packages {', '.join(TOOLKIT)}", f"versionlock {', '.join(TOOLKIT)}"]
    else:
        repos = ["apt repository docker", "packages docker-ce, docker-ce-cli, containerd.io",
                 "apt repository nvidia-container-toolkit", f"packages {', '.join(TOOLKIT)}"]
    assert plan.labels == [*repos, "directory /etc/docker", f"json_merge {DAEMON}",
                           "service docker", "group docker members"]


# ---------------------------------------------------------------- daemon.json

EXISTING = {"data-root": "/data/docker", "log-driver": "json-file",
            "log-opts": {"max-size": "100m", "max-file": "3"},
            "runtimes": {"crun": {"path": "/usr/bin/crun"}}}


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_daemon_json_merge_keeps_existing_keys(distro: str, key: str) -> None:
    current = json.dumps(EXISTING, indent=2) + "\n"
    plan = run(distro, converged(distro, daemon=current), key)
    assert commands(plan) == [DAEMON_WRITE]
    [change] = plan.changes
    assert (change.resource, change.action) == (f"file {DAEMON}", "update")
    assert change.notify == ("restart docker",)
    written = change.steps[0].stdin.decode()
    assert written == (
        '{\n    "data-root": "/data/docker",\n    "log-driver": "json-file",\n'
        '    "log-opts": {\n        "max-size": "100m",\n        "max-file": "3"\n    },\n'
        '    "runtimes": {\n        "crun": {\n            "path": "/usr/bin/crun"\n'
        '        },\n        "nvidia": {\n            "args": [],\n'
        '            "path": "nvidia-container-runtime"\n        }\n    }\n}\n')
    assert (change.diff.before, change.diff.after) == (current, written)
    # the validator runs on the temp file before it replaces daemon.json
    assert "{ dockerd --validate --config-file \"$t\" || " in change.steps[0].command.display()


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_daemon_json_with_runtime_is_left_alone_whatever_its_format(distro: str,
                                                                    key: str) -> None:
    doc = {**EXISTING, "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []},
                                     "crun": {"path": "/usr/bin/crun"}}}
    compact = json.dumps(doc, separators=(",", ":"))       # other order, no spaces
    assert run(distro, converged(distro, daemon=compact), key).changes == []
    tabs = json.dumps(json.loads(DAEMON_TEXT), indent="\t")    # no final newline either
    assert run(distro, converged(distro, daemon=tabs), key).changes == []


def test_daemon_json_runtime_with_another_path_is_corrected(key: str) -> None:
    current = json.dumps({"runtimes": {"nvidia": {"path": "/usr/local/bin/nvidia-runtime",
                                                  "args": []}}})
    plan = run("ubuntu2404", converged("ubuntu2404", daemon=current), key)
    [change] = plan.changes
    assert json.loads(change.steps[0].stdin) == {"runtimes": NVIDIA_RUNTIME}


def test_daemon_json_empty_file_is_filled(key: str) -> None:
    plan = run("debian12", converged("debian12", daemon=""), key)
    [change] = plan.changes
    assert change.action == "update" and change.steps[0].stdin == DAEMON_TEXT.encode()


def test_daemon_json_that_is_not_json_is_not_overwritten(key: str) -> None:
    with pytest.raises(FileOpError, match="not valid JSON"):
        run("ubuntu2204", converged("ubuntu2204", daemon='{"debug": true,'), key)


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_default_runtime(distro: str, key: str) -> None:
    plan = run(distro, converged(distro), key, container_toolkit_default_runtime=True)
    [change] = plan.changes
    assert json.loads(change.steps[0].stdin) == {"runtimes": NVIDIA_RUNTIME,
                                                 "default-runtime": "nvidia"}
    assert commands(plan) == [DAEMON_WRITE]


def test_etc_docker_is_created_before_daemon_json(key: str) -> None:
    facts = converged("ubuntu2204", daemon=None)
    facts[ETC_DOCKER] = None
    facts[FileState(DAEMON)] = None
    plan = run("ubuntu2204", facts, key)
    assert commands(plan) == [
        "mkdir -p -- /etc/docker && [ -d /etc/docker ] && chown -h root:root -- /etc/docker && "
        "chmod 0755 -- /etc/docker",
        DAEMON_WRITE]


# ---------------------------------------------------------------- containerd
# The containerd config (CRI, SystemdCgroup, CDI, the nvidia runtime) is tested in
# test_role_container_toolkit_containerd.py, on canned `containerd config dump` outputs.

def test_bad_runtime_is_refused_before_any_op() -> None:
    ops, exc = ops_until_failure("container_toolkit", system_for("debian12"), {},
                                 vars={"container_runtime": "podman"})
    assert ops == []
    assert exc.message == ("gpu-01: role container_toolkit: container_runtime='podman': "
                           "must be docker or containerd")


# ---------------------------------------------------------------- the pinned version

@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_toolkit_upgrade_moves_all_four_together_and_holds(distro: str, key: str) -> None:
    facts = converged(distro)
    old = toolkit_debs("1.17.8-1")
    facts[DebPackages()] = {**facts[DebPackages()], **{p.name: p for p in old}}
    plan = run(distro, facts, key)
    assert commands(plan) == [apt_mark("unhold", *TOOLKIT),
                              apt_install(*(f"{n}={VERSION}" for n in TOOLKIT)),
                              apt_mark("hold", *TOOLKIT)]
    [change] = plan.changes
    assert change.action == "upgrade"
    assert change.diff.before == "".join(f"{n} 1.17.8-1 (held)\n" for n in TOOLKIT)
    assert change.diff.after == "".join(f"{n} {VERSION} (held)\n" for n in TOOLKIT)


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_toolkit_pinned_to_an_older_version_downgrades(distro: str, key: str) -> None:
    plan = run(distro, converged(distro), key, container_toolkit_version="1.17.8-1")
    assert commands(plan) == [apt_mark("unhold", *TOOLKIT),
                              apt_install(*(f"{n}=1.17.8-1" for n in TOOLKIT), downgrade=True),
                              apt_mark("hold", *TOOLKIT)]


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_toolkit_at_version_but_not_held_is_held(distro: str, key: str) -> None:
    facts = converged(distro)
    facts[DebHeld()] = frozenset()
    plan = run(distro, facts, key)
    assert commands(plan) == [apt_mark("hold", *TOOLKIT)]


def test_toolkit_rhel_version_and_versionlock(key: str) -> None:
    facts = converged("rhel9")
    facts[RpmPackages()] = rpms(*(rpm(n, "28.5.1", "1.el9", epoch=3) for n in DOCKER),
                                *toolkit_rpms("1.17.8"))
    facts[DnfVersionlock()] = VersionlockInfo(True, {n: f"{n}-0:1.17.8-1.*" for n in TOOLKIT})
    plan = run("rhel9", facts, key)
    expected = [f"{DNF} install -- " + " ".join(f"{n}-{VERSION}" for n in TOOLKIT)]
    for name in TOOLKIT:
        expected += [f"{DNF} versionlock delete -- {name}",
                     f"{DNF} versionlock add -- {name}-{VERSION}"]
    assert commands(plan) == expected
    assert plan.changes[0].action == "upgrade"


def test_toolkit_rhel_installed_and_locked_is_no_change(key: str) -> None:
    # versionlock's own spelling (epoch, release glob) matches the wanted version
    assert run("rhel9", converged("rhel9"), key).changes == []


# ---------------------------------------------------------------- repositories

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_repositories_none_uses_the_hosts_own(distro: str) -> None:
    keys.clear_cache()
    facts = fresh(distro)
    plan = plan_role("container_toolkit", system_for(distro), facts,
                     vars={"container_toolkit_repo": "none", "docker_repo": "none"})
    assert not [label for label in plan.labels if "repository" in label]
    expected = fresh_commands(distro)
    assert commands(plan) == [c for c in expected
                              if "keyring" not in c and "sources.list.d" not in c
                              and "rpm-gpg" not in c and "yum.repos.d" not in c
                              and "makecache" not in c]


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_without_docker_install(distro: str, key: str) -> None:
    facts = converged(distro)
    plan = run(distro, facts, key, docker_install=False)
    assert plan.changes == []
    toolkit = f"packages {', '.join(TOOLKIT)}"
    if distro == "rhel9":
        head = ["dnf repository nvidia-container-toolkit", toolkit,
                f"versionlock {', '.join(TOOLKIT)}"]
    else:
        head = ["apt repository nvidia-container-toolkit", toolkit]
    # no Docker repository or packages, but Docker (already there) gets the runtime
    assert plan.labels == [*head, "directory /etc/docker", f"json_merge {DAEMON}",
                           "service docker", "group docker members"]


def test_unreadable_key_in_check_mode_is_unknown(tmp_path: Path) -> None:
    keys.clear_cache()
    missing = str(tmp_path / "missing.gpg")
    plan = run("ubuntu2204", fresh("ubuntu2204"), missing, check=True)
    assert plan.failed == []
    unknown = [c for c in plan.changes if c.resource.startswith("signing key of")]
    assert [c.resource for c in unknown] == [
        "signing key of the repository https://download.docker.com/linux/ubuntu",
        "signing key of the repository "
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"]
    assert all(c.unknown.endswith("; apply would stop here") for c in unknown)

    plan = run("rhel9", fresh("rhel9"), missing, check=True)
    repos = [p for p in plan.ops if p.op.label.startswith("dnf repository")]
    # nothing of a dnf repository is checked without its key: the key is unknown
    assert [[(c.resource, c.steps) for c in p.changes] for p in repos] == [
        [("signing key of the repository https://download.docker.com/linux/rhel", [])],
        [("signing key of the repository "
          "https://nvidia.github.io/libnvidia-container/stable/rpm/$basearch", [])]]


def test_unreadable_key_in_apply_fails_the_task(tmp_path: Path) -> None:
    keys.clear_cache()
    plan = run("debian12", fresh("debian12"), str(tmp_path / "missing.gpg"))
    [(label, error)] = plan.failed
    assert label == "apt repository docker"
    assert "docker_repo.key" in error
    assert plan.labels[-1] == label, "the engine stops the host at the failed task"


def test_asks_for_every_fact_it_needs(key: str) -> None:
    facts = fresh("ubuntu2204")
    del facts[FileState(DAEMON)]
    with pytest.raises(MissingFacts, match=r"json_merge /etc/docker/daemon.json needs: "
                                           r"FileState\('/etc/docker/daemon.json'"):
        run("ubuntu2204", facts, key)


# ---------------------------------------------------------------- handlers

@pytest.mark.parametrize("distro", ALL_DISTROS)
@pytest.mark.parametrize("service", ["docker", "containerd"])
def test_restart_handlers(distro: str, service: str) -> None:
    plan = plan_role("container_toolkit", system_for(distro),
                     {ServiceState(service): service_info(service)},
                     handler=f"restart {service}")
    assert plan.commands == [f"systemctl restart {service}"]
    assert plan.changes[0].action == "restart"


# ---------------------------------------------------------------- docker group

def with_group(facts: dict, *members: str, users: tuple[str, ...] = (),
               existing: tuple[str, ...] | None = None) -> dict:
    """The docker group with `members`; `users` (docker_users) exist unless `existing` says."""
    facts[GroupMembers("docker")] = GroupInfo("docker", 989, members)
    if users:
        facts[ExistingUsers(tuple(sorted(users)))] = frozenset(
            users if existing is None else existing)
    return facts


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_docker_users_are_added_and_others_removed(distro: str, key: str) -> None:
    facts = with_group(converged(distro), "bob", "carol", users=("alice", "carol"))
    plan = run(distro, facts, key, docker_users=["alice", "carol"])
    assert commands(plan) == ["gpasswd -a alice docker", "gpasswd -d bob docker"]
    [change] = plan.changes
    assert (change.resource, change.summary) == ("group docker members", "add alice; remove bob")
    assert (change.diff.before, change.diff.after) == ("bob\ncarol\n", "alice\ncarol\n")
    assert change.invalidates == (GroupMembers,)
    assert change.unknown is None


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_docker_group_already_right_is_no_change(distro: str, key: str) -> None:
    facts = with_group(converged(distro), "alice", users=("alice",))
    assert run(distro, facts, key, docker_users=["alice"]).changes == []


def test_docker_users_empty_by_default_empties_the_group(key: str) -> None:
    # root-equivalent: nobody is in docker unless the inventory names them
    plan = run("ubuntu2404", with_group(converged("ubuntu2404"), "admin"), key)
    assert commands(plan) == ["gpasswd -d admin docker"]


def test_docker_user_that_does_not_exist_is_an_error_naming_the_variable(key: str) -> None:
    facts = with_group(converged("debian12"), users=("alice", "zoe"), existing=("alice",))
    with pytest.raises(UserError) as exc:
        run("debian12", facts, key, docker_users=["alice", "zoe"])
    assert exc.value.message == "docker_users: no user zoe on this host"
    assert exc.value.hint == "create the user first, or remove it from docker_users"


@pytest.mark.parametrize(("value", "message"), [
    ("alice", "docker_users='alice': must be a list of user names, e.g. [alice, bob]"),
    (["alice", "Bob Smith"], "docker_users=['alice', 'Bob Smith']: 'Bob Smith' is not a user "
                             "name"),
])
def test_bad_docker_users_are_refused_before_any_op(value: object, message: str,
                                                   key: str) -> None:
    ops, exc = ops_until_failure("container_toolkit", system_for("rhel9"), converged("rhel9"),
                               vars={"docker_users": value, "container_toolkit_repo": "none",
                                     "docker_repo": "none"})
    assert ops == []
    assert exc.message == f"gpu-01: role container_toolkit: {message}"


def test_docker_users_on_a_fresh_host_wait_for_the_group_in_check_mode(key: str) -> None:
    facts = fresh("ubuntu2204")
    facts[ExistingUsers(("alice",))] = frozenset({"alice"})
    plan = run("ubuntu2204", facts, key, check=True, docker_users=["alice"])
    [change] = [c for c in plan.changes if c.resource == "group docker members"]
    assert change.unknown == ("group docker does not exist yet: depends on the package that "
                              "creates it")
    assert [s.command.display() for s in change.steps] == ["gpasswd -a alice docker"]


def test_docker_users_without_docker_are_refused(key: str) -> None:
    ops, exc = ops_until_failure("container_toolkit", system_for("debian12"),
                               converged("debian12"),
                               vars={"container_runtime": "containerd", "docker_install": False,
                                     "docker_users": ["alice"], "container_toolkit_repo": "none"})
    assert ops == []
    assert exc.message == ("gpu-01: role container_toolkit: docker_users=['alice']: Docker is "
                           "not installed on this host (container_runtime containerd, "
                           "docker_install false)")


def test_key_options_reach_both_repositories(tmp_path: Path) -> None:
    keys.clear_cache()
    (tmp_path / "k.asc").write_text(REAL_KEY)
    repo = {"url": "", "key": str(tmp_path / "k.asc"), "key_fingerprint": REAL_FPR,
            "insecure": True}
    plan = plan_role("container_toolkit", system_for("debian12"), fresh("debian12"),
                     vars={"container_toolkit_repo": repo, "docker_repo": repo})
    repos = [p.op for p in plan.ops if p.op.label.startswith("apt repository")]
    assert len(repos) == 2 and plan.failed == []
    assert all((r.insecure, r.key_fingerprint) == (True, REAL_FPR) for r in repos)
    other = "0" * 40
    plan = plan_role("container_toolkit", system_for("debian12"), fresh("debian12"),
                     vars={"container_toolkit_repo": repo,
                           "docker_repo": {**repo, "key_fingerprint": other}})
    [(label, error)] = plan.failed
    assert label == "apt repository docker"
    assert f"has fingerprint {REAL_FPR}, not the expected {other} (docker_repo" in error


def test_bad_key_options_name_the_variable() -> None:
    ops, exc = ops_until_failure("container_toolkit", system_for("debian12"), {}, vars={
        "docker_repo": {"url": "", "key": "", "insecure": "no"}})
    assert exc.message.startswith("gpu-01: role container_toolkit: docker_repo=")
    assert "insecure must be true or false, not 'no'" in exc.message
