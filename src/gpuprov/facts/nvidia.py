"""NVIDIA facts: the driver the kernel runs, the driver packages installed,
the GPUs nvidia-smi sees, and whether the DKMS signing key is enrolled.

What is installed (package manager) and what is loaded (the kernel module)
differ after an upgrade until the next reboot; roles need both, so they are
two questions, and the loaded one never needs root. Which module is loaded
is read from the kernel's own files (LoadedModule); nvidia-smi (NvidiaSmi),
slow without persistence mode, is asked only for what needs the GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cmp_to_key

from gpuprov.command import Command, Raw
from gpuprov.facts.apt import DebPackage
from gpuprov.facts.base import Fact
from gpuprov.facts.dnf import RpmPackage
from gpuprov.facts.versions import deb_version_compare, rpm_version_compare

# Fields of `nvidia-smi --query-gpu` the roles and `gpuprov verify` read.
GPU_FIELDS = ("index", "name", "driver_version", "memory.total", "uuid")
_MARK = "@@gpuprov-nvidia-smi"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int | None
    uuid: str


@dataclass(frozen=True)
class LoadedDriver:
    """What nvidia-smi says about the running driver.

    state: ok | no-smi (not installed) | no-driver (module not loaded) |
    mismatch (upgraded, reboot pending) | error (anything else, see message).
    """

    state: str
    version: str | None = None
    cuda_version: str | None = None     # the highest CUDA the driver supports
    gpus: tuple[Gpu, ...] = ()
    message: str = ""

    @property
    def branch(self) -> int | None:
        return driver_branch(self.version) if self.version else None


def driver_branch(version: str) -> int | None:
    """'580.95.05' / '1:580.95.05-0ubuntu1' -> 580."""
    match = re.match(r"(?:\d+:)?(\d+)\.", version)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class NvidiaSmi(Fact[LoadedDriver]):
    """The loaded driver, CUDA version and GPUs, from one nvidia-smi query
    plus its banner (CUDA Version is only printed there)."""

    def command(self) -> Command:
        return Command.script(
            "command -v nvidia-smi >/dev/null 2>&1 || { echo no-smi; exit 0; }; "
            f"nvidia-smi --query-gpu={','.join(GPU_FIELDS)} --format=csv,noheader,nounits 2>&1; "
            f"echo \"{_MARK} $?\"; nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*'")

    def process(self, output: str, exit_code: int) -> LoadedDriver:
        if output.strip() == "no-smi":
            return LoadedDriver("no-smi", message="nvidia-smi is not installed")
        body, _, tail = output.partition(_MARK)
        code_text, _, banner = tail.strip().partition("\n")
        code = int(code_text) if code_text.strip().isdigit() else 1
        text = body.strip()
        if code != 0:
            if "version mismatch" in text.lower():
                state = "mismatch"
            elif "couldn't communicate with the nvidia driver" in text.lower():
                state = "no-driver"
            else:
                state = "error"
            return LoadedDriver(state, message=text.splitlines()[0] if text else f"exit {code}")
        gpus, version = [], None
        for line in text.splitlines():
            cells = [c.strip() for c in line.split(",")]
            if len(cells) != len(GPU_FIELDS):
                continue
            index, name, version, memory, uuid = cells
            gpus.append(Gpu(int(index), name, int(memory) if memory.isdigit() else None, uuid))
        cuda = re.search(r"CUDA Version: *([0-9.]+)", banner)
        return LoadedDriver("ok", version, cuda.group(1) if cuda else None, tuple(gpus))


# ---------------------------------------------------------------- loaded module

SYS_MODULE_VERSION = "/sys/module/nvidia/version"
PROC_DRIVER_VERSION = "/proc/driver/nvidia/version"
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)*")
# pNVRM_ID after "NVRM version: ", e.g. "NVIDIA UNIX Open Kernel Module for x86_64
# 580.95.05  Release Build  (...)" or "NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat ...".
_NVRM = re.compile(r"^NVRM version:.*?\s(\d+\.\d+(?:\.\d+)*)(?:\s|$)")


@dataclass(frozen=True)
class LoadedModule(Fact["str | None"]):
    """The version of the nvidia kernel module the running kernel has loaded
    ('580.95.05'), None when none is. Two files the module itself provides:
    /sys/module/nvidia/version (MODULE_VERSION, a bare version) and
    /proc/driver/nvidia/version ('NVRM version: ...'); one cat, no nvidia-smi."""

    def command(self) -> Command:
        # Both in one cat: their lines tell them apart; a missing one only makes cat exit 1.
        return Command("cat", SYS_MODULE_VERSION, PROC_DRIVER_VERSION)

    def process(self, output: str, exit_code: int) -> str | None:
        from_sys = from_proc = None
        for line in output.splitlines():
            text = line.strip()
            if from_sys is None and _VERSION.fullmatch(text):
                from_sys = text
            elif from_proc is None and (match := _NVRM.match(text)):
                from_proc = match.group(1)
        return from_sys or from_proc


# ---------------------------------------------------------------- installed driver

# Debian family: package name -> branch from the name (Ubuntu archive) or None
# (branch from the version: NVIDIA's CUDA repo, Debian's own packages).
_DEB_DRIVER = re.compile(
    r"^(?:nvidia-headless-(?:no-dkms-)?(\d+)(?:-server|-open|-server-open)?"
    r"|nvidia-driver-(\d+)(?:-server|-open|-server-open)?"
    r"|nvidia-utils-(\d+)(?:-server)?"
    r"|nvidia-open|nvidia-kernel-open-dkms|nvidia-kernel-dkms|cuda-drivers"
    r"|nvidia-driver)$")
_RPM_DRIVER = re.compile(
    r"^(?:nvidia-open|nvidia-driver|kmod-nvidia-open-dkms|kmod-nvidia-latest-dkms"
    r"|nvidia-kmod-common|cuda-drivers)$")


@dataclass(frozen=True)
class InstalledDriver:
    branch: int
    version: str
    packages: tuple[str, ...]   # every installed driver package of that branch


def installed_drivers_deb(dpkg: Mapping[str, DebPackage]) -> dict[int, InstalledDriver]:
    """Installed NVIDIA driver packages per branch (normally one branch)."""
    found: dict[int, list[tuple[str, str]]] = {}
    for name, pkg in dpkg.items():
        match = _DEB_DRIVER.match(name)
        if not match or not (pkg.installed or pkg.broken):
            continue
        named = next((g for g in match.groups() if g), None)
        branch = int(named) if named else driver_branch(pkg.version)
        if branch is not None:
            found.setdefault(branch, []).append((name, pkg.version))
    return {b: _installed(b, rows, deb_version_compare) for b, rows in found.items()}


def installed_drivers_rpm(rpm: Mapping[str, tuple[RpmPackage, ...]]
                          ) -> dict[int, InstalledDriver]:
    found: dict[int, list[tuple[str, str]]] = {}
    for name, rows in rpm.items():
        if not _RPM_DRIVER.match(name):
            continue
        for row in rows:
            branch = driver_branch(row.version)
            if branch is not None:
                found.setdefault(branch, []).append((name, row.version))
    return {b: _installed(b, rows, rpm_version_compare) for b, rows in found.items()}


def _installed(branch: int, rows: list[tuple[str, str]],
               compare: Callable[[str, str], int]) -> InstalledDriver:
    """The branch's packages by name, and the newest version among them."""
    rows.sort()
    newest = max((v for _, v in rows), key=cmp_to_key(compare))
    return InstalledDriver(branch, newest, tuple(n for n, _ in rows))


# ---------------------------------------------------------------- secure boot key

DKMS_MOK = "/var/lib/dkms/mok.pub"


@dataclass(frozen=True)
class MokEnrolled(Fact["bool | None"]):
    """Is the DKMS signing key enrolled as a Machine Owner Key? None when
    there is no key yet (DKMS not installed) or no mokutil to ask."""

    path: str = DKMS_MOK

    def command(self) -> Command:
        return Command("test", "-r", self.path, Raw("&&"), "mokutil", "--test-key", self.path)

    def process(self, output: str, exit_code: int) -> bool | None:
        text = output.lower()
        if "is already enrolled" in text:
            return True
        if "is not enrolled" in text:
            return False
        return None
