"""System facts: canned os-release per distro, and every command run here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuprov.facts.base import FactError, FactView, gather_script, parse_batch
from gpuprov.facts.system import (
    SYSTEM_FACTS,
    Arch,
    CommandPath,
    InitSystem,
    KernelRelease,
    ModuleLoaded,
    OsRelease,
    PathExists,
    RootShellTest,
    SecureBoot,
    ShellTest,
    SystemFacts,
)

DATA = Path(__file__).parent / "data" / "facts"


@pytest.mark.parametrize(("name", "family", "distro", "codename", "supported"), [
    ("ubuntu2204", "debian", "ubuntu2204", "jammy", True),
    ("ubuntu2404", "debian", "ubuntu2404", "noble", True),
    ("debian12", "debian", "debian12", "bookworm", True),
    ("rhel9", "rhel", "rhel9", "", True),
    ("rocky9", "rhel", "rhel9", "", True),
    ("alma9", "rhel", "rhel9", "", True),
])
def test_os_release(name: str, family: str, distro: str, codename: str, supported: bool) -> None:
    info = OsRelease().process((DATA / f"os-release.{name}").read_text(), 0)
    assert (info.family, info.distro, info.codename, info.supported) == (
        family, distro, codename, supported)


def test_os_release_fields_and_unknown() -> None:
    info = OsRelease().process((DATA / "os-release.rocky9").read_text(), 0)
    assert info.id == "rocky" and info.version_id == "9.5"
    assert info.id_like == ("rhel", "centos", "fedora")
    assert info.pretty_name == "Rocky Linux 9.5 (Blue Onyx)"
    odd = OsRelease().process('ID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux"\n', 0)
    assert (odd.family, odd.distro, odd.supported) == ("unknown", "", False)
    old = OsRelease().process("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"20.04\"\n", 0)
    assert (old.family, old.distro, old.supported) == ("debian", "ubuntu2004", False)
    with pytest.raises(FactError):
        OsRelease().process("", 1)


def test_small_parsers() -> None:
    assert KernelRelease().process("5.15.0-139-generic\n", 0) == "5.15.0-139-generic"
    arch = Arch().process("aarch64\narm64\n", 0)
    assert (arch.machine, arch.deb, arch.cuda_repo) == ("aarch64", "arm64", "sbsa")
    rhel = Arch().process("x86_64\n", 0)
    assert (rhel.deb, rhel.cuda_repo) == (None, "x86_64")
    assert InitSystem().process("systemd\n", 0) == "systemd"
    assert InitSystem().process("sysvinit\n", 0) == "sysvinit"
    assert ModuleLoaded("nouveau").process("", 0) is True
    assert ModuleLoaded("nouveau").process("", 1) is False
    assert CommandPath("mokutil").process("/usr/bin/mokutil\n", 0) == "/usr/bin/mokutil"
    assert CommandPath("mokutil").process("", 1) is None


@pytest.mark.parametrize(("output", "state"), [
    ("SecureBoot enabled\n", "enabled"),
    ("SecureBoot disabled\nPlatform is in Setup Mode\n", "disabled"),
    ("This system doesn't support Secure Boot\n", "disabled"),
    ("legacy bios\n", "disabled"),
    ("efivar 1\n", "enabled"),
    ("efivar 0\n", "disabled"),
    ("EFI variables are not supported on this system\n", "unknown"),
    ("unknown\n", "unknown"),
])
def test_secure_boot(output: str, state: str) -> None:
    assert SecureBoot().process(output, 0) == state


def test_commands_quote_arguments() -> None:
    assert ModuleLoaded("nvidia-drm").command().shell() == (
        "test -d /sys/module/nvidia_drm || lsmod | grep -q '^nvidia_drm '")
    assert CommandPath("nvidia-smi").command().shell() == "command -v nvidia-smi"
    assert PathExists("/etc/my file").command().shell() == "test -e '/etc/my file'"


def test_system_facts_bundle() -> None:
    assert set(SystemFacts.facts()) == set(SYSTEM_FACTS)
    view = FactView({
        OsRelease(): OsRelease().process((DATA / "os-release.ubuntu2204").read_text(), 0),
        KernelRelease(): "5.15.0-139-generic",
        Arch(): Arch().process("x86_64\namd64\n", 0),
        InitSystem(): "systemd",
        SecureBoot(): "enabled",
    })
    sf = SystemFacts.from_facts(view)
    assert sf.os.distro == "ubuntu2204" and sf.kernel == "5.15.0-139-generic"
    assert sf.arch.deb == "amd64" and sf.init == "systemd" and sf.secure_boot == "enabled"


def run_here(facts: list) -> dict:
    """The real gather script under /bin/sh on this machine (read-only probes)."""
    script, marker = gather_script(facts)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return parse_batch(facts, out, marker)


def test_every_fact_runs_here() -> None:
    facts = [*SYSTEM_FACTS, ModuleLoaded("loop"), ModuleLoaded("nouveau"), CommandPath("sh"),
             CommandPath("no-such-command-xyz"), PathExists("/etc/os-release"),
             PathExists("/no/such/path"), ShellTest("exit 3"), ShellTest("true # comment"),
             RootShellTest("test -r /etc/passwd")]
    got = run_here(facts)
    os_info = got[OsRelease()]
    assert os_info.family in ("debian", "rhel", "unknown") and os_info.id
    assert got[KernelRelease()]
    assert got[Arch()].machine
    assert got[InitSystem()] in ("systemd", "sysvinit")
    assert got[SecureBoot()] in ("enabled", "disabled", "unknown")
    assert got[ModuleLoaded("nouveau")] is False   # no GPU driver on this build machine
    assert got[CommandPath("sh")] and got[CommandPath("no-such-command-xyz")] is None
    assert got[PathExists("/etc/os-release")] is True and got[PathExists("/no/such/path")] is False
    assert got[ShellTest("exit 3")] is False and got[ShellTest("true # comment")] is True
    assert got[RootShellTest("test -r /etc/passwd")] is True
