"""Kernel headers for the RUNNING kernel, the thing DKMS needs to build the
NVIDIA module, and the failure users report most: headers for another
kernel, or none in the repositories. A missing package is a clear error
naming the kernel, before any driver package is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any

from gpuprov.command import Command, Raw
from gpuprov.errors import GpuprovError
from gpuprov.facts.apt import AptCacheAge, AptCandidates, DebPackages, DpkgInterrupted
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.dnf import DnfAvailable, RpmPackages
from gpuprov.facts.system import OsInfo
from gpuprov.ops import apt, dnf
from gpuprov.ops.base import Change, Op, Step, operation
from gpuprov.ops.dpkg_repair import finish_interrupted_dpkg
from gpuprov.ops.package_specs import check_packages

#: an apt cache younger than this is trusted to say "no such package"
FRESH_CACHE = 24 * 3600


class MissingHeaders(GpuprovError):
    pass


def _missing(package: str, kernel: str) -> str:
    return (f"no package {package} for the running kernel {kernel} in the configured "
            "repositories: DKMS cannot build the NVIDIA module without it")


_HINT = ("boot a kernel whose headers your repositories carry (e.g. the distribution's "
         "current one: install it, reboot, re-run), or add the repository that has them")


@operation
class DebKernelHeaders(Op):
    """linux-headers-<kernel> installed, or a clear error when no repository has it."""

    kernel: str
    lock_timeout: int = apt.LOCK_TIMEOUT
    package: str = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.package = f"linux-headers-{self.kernel}"
        # uname -r of the host: checked like any package name that reaches apt-get
        check_packages({self.package: None}, "deb", "the running kernel (uname -r)")
        self.label = f"kernel headers {self.package}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [DebPackages(), AptCandidates.of([self.package]), AptCacheAge(),
                DpkgInterrupted()]

    def plan(self, facts: FactView) -> list[Change]:
        cur = facts[DebPackages()].get(self.package)
        repair = finish_interrupted_dpkg(facts)
        if cur is not None and cur.installed:
            return repair
        policy = facts[AptCandidates.of([self.package])].get(self.package)
        age = facts[AptCacheAge()]
        steps = []
        unknown = None
        if policy is None or policy.candidate is None:
            if age is not None and age <= FRESH_CACHE:
                raise MissingHeaders(_missing(self.package, self.kernel), _HINT)
            unknown = (f"{self.package} is not in the apt cache "
                       f"({'never updated' if age is None else 'older than a day'}): "
                       "apply updates it first and stops if the package does not exist")
            steps.append(apt.apt_step("update", lock_timeout=self.lock_timeout))
            steps.append(Step(Command(
                "apt-cache", "show", self.package, Raw(">/dev/null 2>&1 ||"), Raw("{"), "echo",
                f"gpuprov: {_missing(self.package, self.kernel)}. {_HINT}", Raw(">&2;"),
                "exit", "1", Raw(";"), Raw("}"))))
        steps.append(apt.apt_step(
            "install", "--no-install-recommends", packages=[self.package],
            lock_timeout=self.lock_timeout))
        return repair + [Change(self.label, "install",
                                f"install {self.package} (headers of the running kernel, "
                                "for DKMS)", steps, unknown=unknown, invalidates=None)]


@operation
class RpmKernelHeaders(Op):
    """kernel-devel of exactly the running kernel's version-release, plus
    kernel-headers (NVIDIA's RHEL instructions)."""

    kernel: str
    #: the dnf op that installs them
    packages: dnf.DnfPackages = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        version, _, release = self.kernel.partition("-")
        for arch in (".x86_64", ".aarch64"):
            release = release.removesuffix(arch)
        self.packages = dnf.DnfPackages({"kernel-devel": f"{version}-{release}",
                                         "kernel-headers": None})
        self.label = f"kernel headers kernel-devel-{self.kernel}"

    def facts(self) -> Sequence[Fact[Any]]:
        return self.packages.facts()

    def plan(self, facts: FactView) -> list[Change]:
        changes = self.packages.plan(facts)
        avail = facts[DnfAvailable(tuple(sorted(self.packages.packages)))]
        spec = self.packages.packages["kernel-devel"]
        # Only when kernel-devel itself is to be installed: an installed one
        # (with only kernel-headers missing) needs no repository to carry it.
        installed = facts[RpmPackages()].get("kernel-devel", ())
        if changes and avail is not None and spec and not any(
                p.matches(spec) for p in (*installed, *avail.get("kernel-devel", ()))):
            raise MissingHeaders(_missing(f"kernel-devel-{self.kernel}", self.kernel), _HINT)
        return changes


def kernel_headers(os: OsInfo, kernel: str, lock_timeout: int = apt.LOCK_TIMEOUT) -> Op:
    """Headers of the running kernel `kernel` (uname -r) installed."""
    if os.family == "rhel":
        return RpmKernelHeaders(kernel)
    return DebKernelHeaders(kernel, lock_timeout)
