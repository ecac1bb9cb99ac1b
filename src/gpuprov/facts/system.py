"""Facts about the host itself: distro, kernel, architecture, init, modules.

Every probe is POSIX sh with the target's own tools and stays read-only; a
missing tool yields a documented "unknown" value, never a parse error.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact, FactError

# ---------------------------------------------------------------- os-release

_RHEL_IDS = {"rhel", "rocky", "almalinux", "centos", "ol", "fedora"}
_DEBIAN_IDS = {"debian", "ubuntu", "linuxmint", "pop", "raspbian"}
# Rebuilds of RHEL count as RHEL for repository URLs (cuda-rhel9.repo, EPEL 9).
_RHEL_REBUILDS = {"rhel", "rocky", "almalinux", "centos", "ol"}


@dataclass(frozen=True)
class OsInfo:
    """What /etc/os-release says, plus the keys ops and roles switch on."""

    id: str
    version_id: str
    id_like: tuple[str, ...] = ()
    codename: str = ""
    pretty_name: str = ""

    @property
    def family(self) -> str:
        """debian | rhel | unknown: which package manager and file layout."""
        ids = {self.id, *self.id_like}
        if ids & _DEBIAN_IDS:
            return "debian"
        if ids & _RHEL_IDS:
            return "rhel"
        return "unknown"

    @property
    def major(self) -> str:
        return self.version_id.split(".", 1)[0]

    @property
    def distro(self) -> str:
        """NVIDIA's repository key: ubuntu2204, ubuntu2404, debian12, rhel9; '' if none.

        Ubuntu keeps the minor (22.04 -> 2204); Debian and RHEL rebuilds use
        the major only, which is how developer.download.nvidia.com names them.
        """
        if not self.version_id:
            return ""
        if self.id == "ubuntu":
            return "ubuntu" + self.version_id.replace(".", "")
        if self.id == "debian":
            return "debian" + self.major
        if self.id in _RHEL_REBUILDS:
            return "rhel" + self.major
        if self.id == "fedora":
            return "fedora" + self.major
        return ""

    @property
    def supported(self) -> bool:
        return self.distro in {"ubuntu2204", "ubuntu2404", "debian12", "rhel9"}


def parse_os_release(text: str) -> OsInfo:
    """Parse os-release(5): KEY=value lines with shell-style quoting."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:  # an unbalanced quote: keep the text rather than fail
            words = [raw.strip("\"'")]
        values[key.strip()] = " ".join(words)
    if not values.get("ID"):
        raise FactError("os-release has no ID (is /etc/os-release missing?)")
    return OsInfo(
        id=values["ID"].lower(),
        version_id=values.get("VERSION_ID", ""),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        codename=values.get("VERSION_CODENAME", "") or values.get("UBUNTU_CODENAME", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
    )


@dataclass(frozen=True)
class OsRelease(Fact[OsInfo]):
    def command(self) -> Command:
        # /usr/lib/os-release is the fallback os-release(5) itself names.
        return Command.script("cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release")

    def process(self, output: str, exit_code: int) -> OsInfo:
        return parse_os_release(output)


# ---------------------------------------------------------------- kernel, arch, init

@dataclass(frozen=True)
class KernelRelease(Fact[str]):
    """`uname -r`, e.g. 6.8.0-45-generic: headers must match it exactly."""

    def command(self) -> Command:
        return Command("uname", "-r")

    def process(self, output: str, exit_code: int) -> str:
        release = output.strip()
        if not release:
            raise FactError("uname -r printed nothing")
        return release


@dataclass(frozen=True)
class ArchInfo:
    machine: str              # uname -m: x86_64, aarch64
    deb: str | None = None    # dpkg --print-architecture: amd64, arm64 (Debian family only)
    #: why the host looks like a Jetson (L4T), e.g. "/etc/nv_tegra_release"; None if not
    tegra: str | None = None

    @property
    def cuda_repo(self) -> str:
        """The arch directory of NVIDIA's CUDA repos (servers on arm64 are 'sbsa')."""
        return {"aarch64": "sbsa", "arm64": "sbsa"}.get(self.machine, self.machine)

    @property
    def docker(self) -> str:
        """The OCI/docker name (amd64, arm64): image platforms and Docker's apt repo."""
        return self.deb or {"x86_64": "amd64", "aarch64": "arm64"}.get(self.machine,
                                                                        self.machine)


# Jetson boards run L4T (NVIDIA's Ubuntu with its own kernel and driver in the
# BSP): any of these says so, whichever JetPack generation left it.
_TEGRA = (
    "if [ -e /etc/nv_tegra_release ]; then echo 'tegra: /etc/nv_tegra_release'; "
    "elif grep -aqs 'NVIDIA Jetson' /proc/device-tree/model; then "
    "echo 'tegra: device-tree model NVIDIA Jetson'; "
    "else case $(uname -r) in *tegra*) echo \"tegra: kernel $(uname -r)\";; esac; fi")


@dataclass(frozen=True)
class Arch(Fact[ArchInfo]):
    def command(self) -> Command:
        return Command.script(
            "uname -m; if command -v dpkg >/dev/null 2>&1; then dpkg --print-architecture; fi; "
            + _TEGRA)

    def process(self, output: str, exit_code: int) -> ArchInfo:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        tegra = next((ln.partition(":")[2].strip() for ln in lines if ln.startswith("tegra:")),
                     None)
        lines = [ln for ln in lines if not ln.startswith("tegra:")]
        if not lines:
            raise FactError("uname -m printed nothing")
        return ArchInfo(machine=lines[0], deb=lines[1] if len(lines) > 1 else None,
                        tegra=tegra or None)


@dataclass(frozen=True)
class InitSystem(Fact[str]):
    """systemd | sysvinit. /run/systemd/system is sd_booted()'s own test: a
    systemd binary on disk (containers, chroots) does not mean PID 1 is systemd."""

    def command(self) -> Command:
        return Command.script(
            "if [ -d /run/systemd/system ]; then echo systemd; else echo sysvinit; fi")

    def process(self, output: str, exit_code: int) -> str:
        return "systemd" if output.strip() == "systemd" else "sysvinit"


@dataclass(frozen=True)
class ModuleLoaded(Fact[bool]):
    """Is a kernel module loaded (or built in)? e.g. ModuleLoaded("nouveau")."""

    name: str

    def command(self) -> Command:
        # /sys/module spells dashes as underscores; lsmod covers kernels
        # without sysfs module entries (rare, but then we still answer).
        mod = self.name.replace("-", "_")
        return Command("test", "-d", f"/sys/module/{mod}", Raw("|| lsmod | grep -q"),
                       f"^{mod} ")

    def process(self, output: str, exit_code: int) -> bool:
        return exit_code == 0


@dataclass(frozen=True)
class CommandPath(Fact["str | None"]):
    """`command -v NAME`: the path of a command, or None when it is absent."""

    name: str

    def command(self) -> Command:
        return Command("command", "-v", self.name)

    def process(self, output: str, exit_code: int) -> str | None:
        path = output.strip()
        return path if exit_code == 0 and path else None


# ---------------------------------------------------------------- secure boot

_SB_EFIVAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


@dataclass(frozen=True)
class SecureBoot(Fact[str]):
    """enabled | disabled | unknown. DKMS-built modules must be signed when enabled.

    mokutil when present; else the SecureBoot EFI variable (its 5th byte,
    after 4 attribute bytes); a machine booted without EFI has none.
    """

    def command(self) -> Command:
        return Command.script(
            "if [ ! -d /sys/firmware/efi ]; then echo 'legacy bios'; "
            "elif command -v mokutil >/dev/null 2>&1; then mokutil --sb-state 2>&1; "
            f"elif [ -r {_SB_EFIVAR} ]; then printf 'efivar %s\\n' "
            f"\"$(od -An -tu1 -j4 -N1 {_SB_EFIVAR} | tr -d ' ')\"; "
            "else echo unknown; fi")

    def process(self, output: str, exit_code: int) -> str:
        text = output.lower()
        if "secureboot enabled" in text or text.strip() == "efivar 1":
            return "enabled"
        if ("secureboot disabled" in text or text.strip() in ("efivar 0", "legacy bios")
                or "doesn't support secure boot" in text):
            return "disabled"
        return "unknown"


# ---------------------------------------------------------------- guards for ops.command

@dataclass(frozen=True)
class PathExists(Fact[bool]):
    path: str

    def command(self) -> Command:
        return Command("test", "-e", self.path)

    def process(self, output: str, exit_code: int) -> bool:
        return exit_code == 0


@dataclass(frozen=True)
class ShellTest(Fact[bool]):
    """Exit status of a read-only shell test, e.g. `grep -q x /etc/y` -> True on 0."""

    script: str

    def command(self) -> Command:
        # A subshell so an `exit` in the test cannot end the gather script;
        # the newline keeps a trailing comment in the test from eating ')'.
        return Command.script(f"( {self.script}\n) >/dev/null 2>&1")

    def process(self, output: str, exit_code: int) -> bool:
        return exit_code == 0


@dataclass(frozen=True)
class RootShellTest(ShellTest):
    """ShellTest run as root (reading root-only files)."""

    sudo: ClassVar[bool] = True


# ---------------------------------------------------------------- the bundle

@dataclass(frozen=True)
class SystemFacts:
    """What nearly every op and role switches on, gathered for every host."""

    os: OsInfo
    kernel: str
    arch: ArchInfo
    init: str
    secure_boot: str

    @staticmethod
    def facts() -> tuple[Fact[Any], ...]:
        """The facts the engine always adds to a host's batch."""
        return SYSTEM_FACTS

    @classmethod
    def from_facts(cls, facts: Mapping[Fact[Any], Any]) -> SystemFacts:
        return cls(os=facts[OsRelease()], kernel=facts[KernelRelease()], arch=facts[Arch()],
                   init=facts[InitSystem()], secure_boot=facts[SecureBoot()])


SYSTEM_FACTS: tuple[Fact[Any], ...] = (OsRelease(), KernelRelease(), Arch(), InitSystem(),
                                       SecureBoot())
