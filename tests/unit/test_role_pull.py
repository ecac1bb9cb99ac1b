"""Role pull against canned facts, per distro and init: the packages, the
wheels copied by digest (never shown), the venv and its one pip install from
the wheels alone, the exact pull.yml, systemd units or cron line, the deploy
key kept secret, no change on a converged host, and the refusals (bad
variables, wheels that do not fit the host) before any change."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuprov.engine.context import RoleFailed
from gpuprov.facts.apt import AptCandidates, DebHeld, DebPackages, DpkgInterrupted
from gpuprov.facts.dnf import DnfAvailable, RpmPackages
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.facts.python import PythonVersion, VenvProjectVersion
from gpuprov.facts.services import ServiceInfo, ServiceState
from gpuprov.facts.system import PathExists, ShellTest
from gpuprov.ops.file_plan import NoteDiff
from tests.unit.role_facts import apt_install, deb, dpkg, policies, policy, rpm, rpms, service_info
from tests.unit.role_harness import RolePlan, plan_role, system_for
from tests.unit.test_role_jupyter import a_file, directory, written

VENV, WHEELS = "/opt/gpuprov", "/opt/gpuprov/wheels"
CONFIG, SIGNERS, KEY = ("/etc/gpuprov/pull.yml", "/etc/gpuprov/pull-allowed-signers",
                        "/etc/gpuprov/pull-deploy-key")
KNOWN = "/etc/gpuprov/pull_known_hosts"
SERVICE = "/etc/systemd/system/gpuprov-pull.service"
TIMER_UNIT = "/etc/systemd/system/gpuprov-pull.timer"
TIMER = "gpuprov-pull.timer"
CRON = "/etc/cron.d/gpuprov-pull"
REPO = "https://git.example.com/team/fleet.git"
PRIVATE = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n" \
          b"-----END OPENSSH PRIVATE KEY-----\n"

HOSTS = [("ubuntu2204", "systemd"), ("ubuntu2404", "systemd"), ("debian12", "systemd"),
         ("debian12", "sysvinit"), ("rhel9", "systemd")]
PY = {"ubuntu2204": (3, 10), "ubuntu2404": (3, 12), "debian12": (3, 11), "rhel9": (3, 11)}
WHEEL_NAMES = ("gpuprov-0.1.0-py3-none-any.whl", "click-8.1.7-py3-none-any.whl",
               "PyYAML-6.0.2-{cp}-{cp}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")


def make_wheelhouse(root: Path, python: tuple[int, int] = (3, 11)) -> Path:
    """Wheels whose bytes are binary (a zip holds NULs): what pip would find."""
    root.mkdir(parents=True, exist_ok=True)
    cp = f"cp{python[0]}{python[1]}"
    for i, name in enumerate(WHEEL_NAMES):
        (root / name.format(cp=cp)).write_bytes(b"PK\x03\x04\0\xff" + bytes([i]) * 64)
    return root


@pytest.fixture
def house(tmp_path: Path) -> Path:
    return make_wheelhouse(tmp_path / "wheels")


def wheels_of(house: Path) -> list[Path]:
    return sorted(house.glob("*.whl"))


def python_of(distro: str) -> str:
    return "python3.11" if distro == "rhel9" else "python3"


def packages_of(distro: str, init: str) -> list[str]:
    if distro == "rhel9":
        return ["python3.11", "git"]
    return ["python3", "python3-venv", "git", *([] if init == "systemd" else ["cron"])]


def stale_test(house: Path) -> ShellTest:
    keep = " ".join(f"'!' -name {w.name}" for w in wheels_of(house))
    return ShellTest(f"find {WHEELS} -maxdepth 1 -type f -name '*.whl' {keep} | grep -q .")


def uploaded(path: Path, mode: str = "0644") -> FileInfo:
    data = path.read_bytes()
    return FileInfo("file", "root", "root", mode, len(data), 0, 0,
                    hashlib.sha256(data).hexdigest())


def host(house: Path, distro: str, init: str, *, installed: bool = False,
         python: tuple[int, int] | None = None, venv: str | None = None) -> dict[Any, Any]:
    """A host without anything of pull mode (installed: its packages are there)."""
    names = sorted(packages_of(distro, init))
    facts: dict[Any, Any] = {
        PythonVersion(python_of(distro)): python, VenvProjectVersion(VENV, "gpuprov"): venv,
        FileState(VENV, content=False): None, FileState(WHEELS, content=False): None,
        FileState("/etc/gpuprov", content=False): None, FileState(CONFIG, sudo=True): None,
        FileState(SIGNERS): None, FileState(KEY, sudo=True): None, FileState(KNOWN): None,
        FileState(KEY, content=False, sudo=True): None,
        PathExists(f"{VENV}/bin/pip"): False, stale_test(house): False}
    facts.update({FileState(f"{WHEELS}/{w.name}", content=False): None for w in wheels_of(house)})
    if distro == "rhel9":
        facts[RpmPackages()] = rpms(*(rpm(n, "1.0", "1.el9") for n in names)) if installed \
            else {}
        facts[DnfAvailable(tuple(names))] = rpms(*(rpm(n, "1.0", "1.el9") for n in names))
    else:
        facts[DebPackages()] = dpkg(*(deb(n, "1.0") for n in names)) if installed else {}
        facts[DebHeld()] = frozenset()
        facts[DpkgInterrupted()] = False
        facts[AptCandidates(tuple(names))] = policies(
            *(policy(n, "1.0", installed="1.0" if installed else None) for n in names))
    if init == "systemd":
        facts.update({FileState(SERVICE): None, FileState(TIMER_UNIT): None,
                      ServiceState(TIMER): service_info(TIMER, exists=False)})
    else:
        facts[FileState(CRON)] = None
        facts[ServiceState("cron")] = ServiceInfo("cron", "sysvinit", True, True, True,
                                                  status_code=0,
                                                  links=("/etc/rc2.d/S01cron",))
    return facts


def vars_for(house: Path, **more: Any) -> dict[str, Any]:
    return {"pull_repo": REPO, "pull_wheelhouse": str(house), "pull_wheelhouse_repacked": True,
            **more}


def run(house: Path, facts: dict[Any, Any], distro: str = "debian12", init: str = "systemd",
        host_name: str = "gpu-01", handler: str | None = None, **more: Any) -> RolePlan:
    return plan_role("pull", system_for(distro, init=init), facts, vars=vars_for(house, **more),
                     host=host_name, handler=handler)


def converged(house: Path, distro: str, init: str, **more: Any) -> dict[Any, Any]:
    """The host after the fresh plan was applied: every file as it was written."""
    fresh = host(house, distro, init)
    plan = run(house, fresh, distro, init, **more)
    facts = host(house, distro, init, installed=True, python=PY[distro], venv="0.1.0")
    for path in (VENV, WHEELS, "/etc/gpuprov"):
        facts[FileState(path, content=False)] = directory()
    for wheel in wheels_of(house):
        facts[FileState(f"{WHEELS}/{wheel.name}", content=False)] = uploaded(wheel)
    facts[PathExists(f"{VENV}/bin/pip")] = True
    facts[FileState(CONFIG, sudo=True)] = a_file(written(plan, CONFIG), "0600")
    if init == "systemd":
        facts[FileState(SERVICE)] = a_file(written(plan, SERVICE))
        facts[FileState(TIMER_UNIT)] = a_file(written(plan, TIMER_UNIT))
        facts[ServiceState(TIMER)] = service_info(TIMER)
    else:
        facts[FileState(CRON)] = a_file(written(plan, CRON))
    return facts


# ---------------------------------------------------------------- a fresh host

@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_fresh_host_gets_everything_in_checklist_order(tmp_path: Path, distro: str,
                                                      init: str) -> None:
    house = make_wheelhouse(tmp_path / "w", PY[distro])
    plan = run(house, host(house, distro, init), distro, init)
    labels = plan.changed()
    python = python_of(distro)
    expected = [
        "packages" if distro != "rhel9" else "dnf packages", f"directory {VENV}",
        f"directory {WHEELS}", *(f"upload {WHEELS}/{w.name}" for w in wheels_of(house)),
        f"command {python} -m venv {VENV}", f"command pip install gpuprov==0.1.0 into {VENV}",
        "directory /etc/gpuprov", f"file {CONFIG}"]
    expected += ([f"file {SERVICE}", f"file {TIMER_UNIT}", f"service {TIMER}"]
                 if init == "systemd" else [f"file {CRON}"])
    assert [label.split(" [")[0] for label in labels][1:] == expected[1:], labels
    commands = plan.commands
    if distro != "rhel9":
        assert apt_install(*packages_of(distro, init)) in commands
    else:
        assert "dnf -y --setopt=timeout=15 --setopt=retries=1 install -- python3.11 git" \
            in commands
    assert f"{python} -m venv {VENV}" in commands
    assert (f"{VENV}/bin/pip install -q --disable-pip-version-check --no-index --find-links "
            f"{WHEELS} gpuprov==0.1.0") in commands


def test_each_wheel_is_copied_as_its_bytes_and_never_shown(house: Path) -> None:
    plan = run(house, host(house, "debian12", "systemd"))
    for wheel in wheels_of(house):
        [change] = [c for c in plan.changes if c.resource == f"file {WHEELS}/{wheel.name}"]
        assert change.steps[0].stdin == wheel.read_bytes()
        assert isinstance(change.diff, NoteDiff)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:12]
        assert change.diff.unified().endswith(f"sha256 (absent) -> {digest}\n")
        assert "PK" not in change.diff.unified()


def test_pull_yml_is_exact_root_only_and_names_the_host(house: Path) -> None:
    plan = run(house, host(house, "debian12", "systemd"), host_name="gpu-07",
               pull_ref="v2", pull_mode="check", pull_interval=600, pull_splay=0)
    text = written(plan, CONFIG).decode()
    assert yaml.safe_load(text) == {
        "repo": REPO, "ref": "v2", "inventory": "inventory.yml",
        "playbook": "playbooks/site.yml", "host": "gpu-07", "mode": "check", "interval": 600,
        "splay": 0, "verify": "none", "allowed_signers": SIGNERS, "keep_reports": 20,
        "textfile_dir": "/var/lib/node_exporter/textfile_collector"}
    [change] = [c for c in plan.changes if c.resource == f"file {CONFIG}"]
    assert "root:root 0600" in change.summary


def test_systemd_units_run_gpuprov_pull_every_interval(house: Path) -> None:
    plan = run(house, host(house, "debian12", "systemd"), "debian12", pull_interval=600)
    service = written(plan, SERVICE).decode()
    assert "Type=oneshot\nExecStart=/opt/gpuprov/bin/gpuprov pull\n" in service
    timer = written(plan, TIMER_UNIT).decode()
    assert "OnBootSec=60\nOnUnitActiveSec=600s\n" in timer
    assert "\nAccuracySec=1s\n" in timer   # not a minute late
    assert "WantedBy=timers.target" in timer
    [unit_change] = [c for c in plan.changes if c.resource == f"file {SERVICE}"]
    assert unit_change.notify == ("reload systemd",)
    [timer_change] = [c for c in plan.changes if c.resource == f"file {TIMER_UNIT}"]
    assert timer_change.notify == ("restart pull timer",)
    assert "systemctl enable --now gpuprov-pull.timer" in " ".join(plan.commands) or \
        any("gpuprov-pull.timer" in c and "start" in c for c in plan.commands)


@pytest.mark.parametrize(("interval", "line"), [
    (900, "*/15 * * * *"), (30, "*/1 * * * *"), (3600, "0 */1 * * *"),
    (7200, "0 */2 * * *"), (86400, "0 0 * * *")])
def test_sysvinit_cron_entry(house: Path, interval: int, line: str) -> None:
    plan = run(house, host(house, "debian12", "sysvinit"), "debian12", "sysvinit",
               pull_interval=interval)
    text = written(plan, CRON).decode()
    assert (f"{line} root /opt/gpuprov/bin/gpuprov pull >>/var/log/gpuprov-pull.log 2>&1\n"
            in text), text
    [change] = [c for c in plan.changes if c.resource == f"file {CRON}"]
    assert "root:root 0644" in change.summary
    assert not any("systemctl" in c for c in plan.commands)


def test_sysvinit_starts_cron_where_it_is_stopped(house: Path) -> None:
    facts = host(house, "debian12", "sysvinit")
    facts[ServiceState("cron")] = ServiceInfo("cron", "sysvinit", True, False, True,
                                              status_code=3, links=("/etc/rc2.d/S01cron",))
    plan = run(house, facts, "debian12", "sysvinit")
    assert "service cron" in [label.split(" [")[0] for label in plan.changed()]


# ---------------------------------------------------------------- secrets

def test_deploy_key_is_copied_root_only_and_masked(house: Path, tmp_path: Path) -> None:
    key = tmp_path / "deploy"
    key.write_bytes(PRIVATE)
    plan = run(house, host(house, "debian12", "systemd"), pull_deploy_key=str(key))
    [change] = [c for c in plan.changes if c.resource == f"file {KEY}"]
    assert change.steps[0].stdin == PRIVATE
    assert "root:root 0600" in change.summary
    shown = change.diff.unified() + " ".join(plan.commands) + repr(change.to_json())
    assert "OPENSSH" not in shown and "b3Blbn" not in shown
    assert hashlib.sha256(PRIVATE).hexdigest()[:12] not in shown
    assert yaml.safe_load(written(plan, CONFIG))["deploy_key"] == KEY


GIT_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize(("repo", "server"), [
    ("ssh://git@git.example.com/team/fleet.git", "git.example.com"),
    ("ssh://git@git.example.com:2222/team/fleet.git", "[git.example.com]:2222"),
    ("git@github.com:team/fleet.git", "github.com")])
def test_an_ssh_repo_gets_the_git_servers_host_key_from_the_inventory(
        house: Path, tmp_path: Path, repo: str, server: str) -> None:
    key = tmp_path / "deploy"
    key.write_bytes(PRIVATE)
    line = f"{server} ssh-ed25519 {GIT_KEY}"
    plan = run(house, host(house, "debian12", "systemd"), pull_repo=repo,
               pull_deploy_key=str(key), pull_known_hosts=[line])
    assert written(plan, KNOWN) == (line + "\n").encode()
    assert yaml.safe_load(written(plan, CONFIG))["repo"] == repo


def test_or_from_this_controllers_known_hosts(house: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(
        f"other.example.com ssh-ed25519 {GIT_KEY}\n"
        f"[git.example.com]:2222 ssh-ed25519 {GIT_KEY}\n")
    key = tmp_path / "deploy"
    key.write_bytes(PRIVATE)
    plan = run(house, host(house, "debian12", "systemd"), pull_deploy_key=str(key),
               pull_repo="ssh://git@git.example.com:2222/team/fleet.git")
    assert written(plan, KNOWN) == f"[git.example.com]:2222 ssh-ed25519 {GIT_KEY}\n".encode()
    with pytest.raises(RoleFailed, match=r"pull_known_hosts.*the git server gitlab.example.com's "
                       r"host key is needed"):
        run(house, host(house, "debian12", "systemd"), pull_deploy_key=str(key),
            pull_repo="ssh://git@gitlab.example.com/team/fleet.git")


def test_a_deploy_key_no_longer_set_is_removed(house: Path) -> None:
    facts = host(house, "debian12", "systemd")
    facts[FileState(KEY, sudo=True)] = FileInfo("file", "root", "root", "0600", 10, 0, 0,
                                                "ab" * 32, b"secretkey\n")
    plan = run(house, facts)
    [change] = [c for c in plan.changes if c.resource == f"file {KEY}"]
    assert change.action == "delete" and "secretkey" not in change.diff.unified()


def test_a_repo_url_holding_a_token_makes_pull_yml_secret(house: Path) -> None:
    from gpuprov.command import Secret

    url = Secret("https://oauth2:glpat-abc@git.example.com/team/fleet.git")
    plan = run(house, host(house, "debian12", "systemd"), pull_repo=url)
    [change] = [c for c in plan.changes if c.resource == f"file {CONFIG}"]
    assert "glpat" not in change.diff.unified()
    assert b"glpat-abc" in change.steps[0].stdin


def test_signed_commits_write_the_allowed_signers(house: Path) -> None:
    signer = "alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake"
    plan = run(house, host(house, "debian12", "systemd"), pull_repo_verify="signed",
               pull_allowed_signers=[signer])
    assert written(plan, SIGNERS) == (signer + "\n").encode()
    assert yaml.safe_load(written(plan, CONFIG))["verify"] == "signed"


# ---------------------------------------------------------------- idempotence

@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_converged_host_has_no_change(tmp_path: Path, distro: str, init: str) -> None:
    house = make_wheelhouse(tmp_path / "w", PY[distro])
    plan = run(house, converged(house, distro, init), distro, init)
    assert plan.changed() == []


def test_a_changed_wheel_alone_is_copied_again_and_reinstalls_gpuprov(house: Path) -> None:
    facts = converged(house, "debian12", "systemd")
    own = house / WHEEL_NAMES[0]
    facts[FileState(f"{WHEELS}/{own.name}", content=False)] = FileInfo(
        "file", "root", "root", "0644", 5, 0, 0, "00" * 32)
    plan = run(house, facts)
    assert [label.split(" [")[0] for label in plan.changed()] == [
        f"upload {WHEELS}/{own.name}", f"command pip install gpuprov==0.1.0 into {VENV}"]
    assert any("--force-reinstall --no-deps gpuprov==0.1.0" in c for c in plan.commands)


def test_another_version_in_the_venv_is_upgraded(house: Path) -> None:
    facts = converged(house, "debian12", "systemd")
    facts[VenvProjectVersion(VENV, "gpuprov")] = "0.0.9"
    plan = run(house, facts)
    assert [label.split(" [")[0] for label in plan.changed()] == [
        f"command pip install gpuprov==0.1.0 into {VENV}"]
    assert not any("--force-reinstall" in c for c in plan.commands)


def test_wheels_no_longer_in_the_wheelhouse_are_removed(house: Path) -> None:
    facts = converged(house, "debian12", "systemd")
    facts[stale_test(house)] = True
    plan = run(house, facts)
    [command] = plan.commands
    assert command.startswith(f"find {WHEELS} -maxdepth 1 -type f -name '*.whl' '!' -name ")
    assert command.endswith(" -delete")


def test_handlers_reload_systemd_and_restart_the_timer(house: Path) -> None:
    facts = converged(house, "debian12", "systemd")
    plan = run(house, facts, handler="restart pull timer")
    assert plan.commands[0] == "systemctl daemon-reload"
    assert "gpuprov-pull.timer" in plan.commands[-1] and "restart" in plan.commands[-1]
    assert run(house, facts, "debian12", "sysvinit", handler="reload systemd").commands == []


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize(("name", "value", "says"), [
    ("pull_repo", "", "non-empty"),
    ("pull_repo", "github.com/team/fleet.git", "git://, https://, ssh://, file:// URL"),
    ("pull_known_hosts", ["github.com"], "list of known_hosts lines"),
    ("pull_mode", "sometimes", "one of apply, check"),
    ("pull_interval", 0, "at least 1"),
    ("pull_interval", "soon", "whole number"),
    ("pull_splay", -5, "at least 0"),
    ("pull_repo_verify", "gpg", "one of none, signed"),
    ("pull_repo_verify", "signed", "pull_allowed_signers is empty"),
    ("pull_allowed_signers", "alice ssh-ed25519 AAAA", "must be a list"),
    ("pull_allowed_signers", ["alice"], "not an allowed-signers line"),
    ("pull_playbook", "/etc/site.yml", "inside the repository"),
    ("pull_keep_reports", 0, "at least 1"),
    ("pull_textfile_dir", "relative/dir", "absolute"),
    ("pull_wheelhouse", "", "gpuprov pull-setup"),
])
def test_bad_variables_are_refused_naming_host_and_variable(
        house: Path, name: str, value: object, says: str) -> None:
    with pytest.raises(RoleFailed) as info:
        run(house, host(house, "debian12", "systemd"), **{name: value})
    assert str(info.value).startswith(f"gpu-01: role pull: {name}")
    assert says in str(info.value)


def test_the_refusal_shows_the_value_but_never_a_secret_one(house: Path) -> None:
    with pytest.raises(RoleFailed, match=r"pull_mode='x'"):
        run(house, host(house, "debian12", "systemd"), pull_mode="x")
    with pytest.raises(RoleFailed) as info:
        run(house, host(house, "debian12", "systemd"), pull_deploy_key="/nonexistent/key")
    assert "pull_deploy_key: no such file on this machine" in str(info.value)
    assert "/nonexistent" not in str(info.value)


@pytest.mark.parametrize(("distro", "arch", "python", "differs"), [
    ("ubuntu2404", "x86_64", None, "python3 3.12 (to be installed) on x86_64"),
    ("debian12", "aarch64", (3, 11), "python3 3.11 on aarch64"),
    ("ubuntu2204", "x86_64", (3, 10), "python3 3.10 on x86_64"),
])
def test_repacked_binary_wheels_that_do_not_fit_are_refused_before_any_change(
        house: Path, distro: str, arch: str, python: tuple[int, int] | None,
        differs: str) -> None:
    facts = host(house, distro, "systemd", python=python)
    with pytest.raises(RoleFailed) as info:
        plan_role("pull", system_for(distro, arch=arch), facts, vars=vars_for(house))
    text = str(info.value)
    assert text.startswith("gpu-01: role pull: the wheels repacked from this controller's "
                           f"Python do not fit the host's {differs}")
    assert "no wheel of pyyaml installs there (has PyYAML (cp311-cp311-" in text
    version = differs.split()[1]
    assert f"--python-version {version} --platform manylinux2014_{arch}" in text
    assert text.endswith("then pass --wheelhouse DIR")


def test_an_operators_wheelhouse_for_the_host_is_accepted(tmp_path: Path) -> None:
    house = make_wheelhouse(tmp_path / "w312", (3, 12))
    plan = plan_role("pull", system_for("ubuntu2404"), host(house, "ubuntu2404", "systemd"),
                     vars={**vars_for(house), "pull_wheelhouse_repacked": False})
    assert plan.changed()


def test_an_operators_wheelhouse_that_does_not_fit_is_named(tmp_path: Path) -> None:
    house = make_wheelhouse(tmp_path / "w311", (3, 11))
    with pytest.raises(RoleFailed, match=f"the wheels in --wheelhouse {house} do not fit "
                       r"the host's python3 3.12 \(to be installed\) on x86_64"):
        plan_role("pull", system_for("ubuntu2404"), host(house, "ubuntu2404", "systemd"),
                  vars={**vars_for(house), "pull_wheelhouse_repacked": False})


def test_python_below_3_10_is_refused(house: Path) -> None:
    facts = host(house, "rhel9", "systemd", python=(3, 9))
    with pytest.raises(RoleFailed, match=r"gpuprov needs Python >= 3.10; the host has "
                       r"python3.11 3.9"):
        run(house, facts, "rhel9")


def test_a_wheelhouse_without_gpuprov_is_refused(tmp_path: Path) -> None:
    house = tmp_path / "w"
    house.mkdir()
    (house / "click-8.1.7-py3-none-any.whl").write_bytes(b"PK")
    with pytest.raises(RoleFailed, match="must hold exactly one gpuprov version"):
        run(house, {})
