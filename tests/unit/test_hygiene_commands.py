"""Issue 14, command hygiene: hostile package names, versions, user names and
URLs from the inventory never reach a root command line as options or shell.

Each hostile value is refused with an error that names it and where it came
from; the accepted ones go after `--`.
"""

from __future__ import annotations

import pytest

from gpuprov.engine.context import RoleFailed
from gpuprov.facts.base import FactView
from gpuprov.facts.files import FileState
from gpuprov.facts.system import ShellTest
from gpuprov.facts.users import UserAccount, UserHome
from gpuprov.ops import apt, dnf
from gpuprov.ops.kernel import DebKernelHeaders
from gpuprov.ops.package_specs import PackageNameError, package_versions
from gpuprov.ops.packages import packages
from tests.unit.role_facts import DNF
from tests.unit.role_harness import plan_role, system_for

HOSTILE_NAMES = [
    "-oDPkg::Pre-Invoke::=touch /tmp/x",   # an apt option running a command as root
    "--allow-unauthenticated",
    "x; touch /tmp/x",
    "$(touch /tmp/x)",
    "a b",
    "pkg\nrm",
    "../../etc/passwd",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_a_hostile_package_name_is_refused_naming_it_and_the_source(kind: str, name: str) -> None:
    with pytest.raises(PackageNameError) as err:
        package_versions([name], kind, "base_packages")
    assert "base_packages" in str(err.value) and repr(name) in str(err.value)


@pytest.mark.parametrize("version", ["1.0; touch /tmp/x", "-1", "1 2", "$(id)", "1`id`"])
@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_a_hostile_version_is_refused(kind: str, version: str) -> None:
    with pytest.raises(PackageNameError, match="version .* of package nvidia-utils"):
        package_versions({"nvidia-utils": version}, kind, "nvidia_driver")


@pytest.mark.parametrize(("kind", "names"), [
    ("deb", {"nvidia-utils-580-server": "580.95*", "libc6:i386": None, "g++": None,
             "cuda-keyring": "1:1.1-1ubuntu0~22.04"}),
    ("rpm", {"kernel-devel": "5.14.0-427.13.1.el9_4", "nvidia-open": "580.*",
             "NetworkManager": None, "python3-dnf-plugin-versionlock": None}),
])
def test_real_names_and_versions_are_accepted(kind: str, names: dict) -> None:
    assert package_versions(names, kind, "x") == names


def test_debian_names_follow_policy() -> None:
    for bad in ("Foo", "x", "_x", "-x", ".x"):
        with pytest.raises(PackageNameError):
            package_versions([bad], "deb", "v")


def test_the_ops_refuse_hostile_names_before_any_command() -> None:
    name = "-oDPkg::Pre-Invoke::=touch /tmp/x"
    with pytest.raises(PackageNameError, match="apt packages"):
        apt.packages([name])
    with pytest.raises(PackageNameError, match="docker_users_pkgs"):
        apt.packages({name: None}, state="absent", source="docker_users_pkgs")
    with pytest.raises(PackageNameError, match="dnf packages"):
        dnf.packages([name])
    with pytest.raises(PackageNameError, match="dnf versionlock"):
        dnf.versionlock({"nvidia-open": "580; reboot"})
    with pytest.raises(PackageNameError, match="uname"):
        DebKernelHeaders("6.8.0 -oAPT::x=1")


def test_package_names_follow_a_double_dash() -> None:
    assert apt.apt_get("install", "-y", packages=["a-b", "c"]).shell().endswith(" -- a-b c")
    update = apt.apt_get("update").shell()
    assert update.endswith("APT::Update::Error-Mode=any") and " -- " not in update  # no names
    assert dnf.dnf("install", packages=["a"]).shell() == f"{DNF} install -- a"
    assert dnf.dnf("remove", packages=["a", "b"]).shell() == f"{DNF} remove -- a b"
    assert apt.apt_mark("hold", ["a"]).command.shell().endswith("hold -- a")


def test_the_ops_put_names_after_double_dash() -> None:
    op = apt.packages(["nvidia-utils-580-server"], state="absent", purge=True)
    from gpuprov.facts.apt import DebHeld, DebPackage, DebPackages, DpkgInterrupted
    facts = FactView({DebPackages(): {"nvidia-utils-580-server": DebPackage(
        "nvidia-utils-580-server", "580.1", "install ok installed")}, DebHeld(): frozenset(),
        DpkgInterrupted(): False})
    [change] = op.plan(facts)
    assert change.steps[-1].command.shell().endswith(" -- nvidia-utils-580-server")


def test_packages_names_the_source_for_both_families() -> None:
    for distro in ("debian12", "rhel9"):
        with pytest.raises(PackageNameError, match="base_packages"):
            packages(system_for(distro).os, ["-x"], source="base_packages")


# ---------------------------------------------------------------- roles

def test_base_refuses_a_hostile_base_packages_entry() -> None:
    with pytest.raises(RoleFailed) as err:
        plan_role("base", system_for("debian12"), {},
                  vars={"base_packages": ["-oDPkg::Pre-Invoke::=touch /tmp/x"]})
    text = str(err.value)
    assert "role base" in text and "base_packages" in text
    assert "'-oDPkg::Pre-Invoke::=touch /tmp/x' is not a valid package name" in text


@pytest.mark.parametrize("value", [
    "https://dl.fedoraproject.org/epel-release-latest-9.noarch.rpm; touch /tmp/pwn",
    "epel-release; touch /tmp/pwn",
    "$(touch /tmp/pwn)",
    "-y",
    "http://insecure.example/epel.rpm",
])
def test_nvidia_driver_refuses_a_hostile_epel_release(value: str, tmp_path) -> None:
    key = tmp_path / "key.pub"
    key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----\n")
    from tests.unit.test_role_nvidia_driver import fresh
    with pytest.raises(RoleFailed, match="nvidia_driver_epel_release"):
        plan_role("nvidia_driver", system_for("rhel9"), fresh("rhel9"),
                  vars={"nvidia_driver_repo": {"url": "", "key": str(key)},
                        "nvidia_driver_epel_release": value})


def test_nvidia_driver_epel_install_is_one_quoted_argument(tmp_path) -> None:
    key = tmp_path / "key.pub"
    key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----\n")
    from tests.unit.test_role_nvidia_driver import fresh
    plan = plan_role("nvidia_driver", system_for("rhel9"), fresh("rhel9"),
                     vars={"nvidia_driver_repo": {"url": "", "key": str(key)},
                           "nvidia_driver_epel_release": "epel-release"})
    epel = [p.op for p in plan.ops if p.op.label == "command install EPEL"]
    assert [op.command.parts for op in epel] == [(*DNF.split(), "install", "--", "epel-release")]


# ---------------------------------------------------------------- onboard_user

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpuprovtestkeyXXXXXXXXXXXXXXXXXXXXXXXXXXX"


def plan_onboard(user: str):
    home = f"/home/{user}"
    facts: dict = {UserHome(user): UserAccount(home, user), ShellTest(f"id {user}"): True}
    for path in (f"{home}/.ssh", f"{home}/.ssh/authorized_keys",
                 f"/etc/sudoers.d/90-gpuprov-{user.replace('.', '_')}"):
        for content in (True, False):
            for sudo in (True, False):
                facts[FileState(path, content=content, sudo=sudo)] = None
    return plan_role("onboard_access", system_for("debian12"), facts,
                     vars={"onboard_user": user, "onboard_authorized_keys": [KEY]})


@pytest.mark.parametrize("user", [
    "x/../../etc/cron.d/evil", "x/../../../etc/cron.d/evil", "-r", "-oPermit", "Admin",
    "a b", "a;id", "$(id)", "machine$", "a" * 33,
])
def test_onboard_user_is_refused_unless_a_user_name(user: str) -> None:
    with pytest.raises(RoleFailed, match="onboard_user.*is not a user name"):
        plan_onboard(user)


def test_onboard_user_with_a_dot_gets_a_sudoers_file_sudo_reads() -> None:
    plan = plan_onboard("first.last")
    files = [p.op.label for p in plan.ops if p.op.label.startswith("file /etc/sudoers.d/")]
    # sudo skips sudoers.d names containing '.': the rule would be silently ignored
    assert files == ["file /etc/sudoers.d/90-gpuprov-first_last"]
    sudoers = [s.stdin for c in plan.changes for s in c.steps if s.stdin and b"ALL=" in s.stdin]
    assert sudoers == [b"# Managed by gpuprov onboard\nfirst.last ALL=(ALL) NOPASSWD: ALL\n"]


def test_onboard_writes_in_the_users_home_as_the_user() -> None:
    plan = plan_onboard("alice")
    home = [c for c in plan.changes if c.resource.endswith(("/.ssh", "authorized_keys"))]
    assert len(home) == 2
    for change in home:
        assert all(s.command.parts[:5] == ("runuser", "-u", "alice", "--", "sh")
                   for s in change.steps)
    sudoers = [c for c in plan.changes if "sudoers" in c.resource]
    assert sudoers and not any("runuser" in s.command.shell() for s in sudoers[0].steps)
