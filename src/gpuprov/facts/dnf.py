"""rpm/dnf facts: installed and available packages, versionlocks, modules, repos.

Read-only and network-free (dnf runs with -C, from its cache). Each command
first checks that its tool exists, so asking a dnf fact on Debian gives an
empty answer, not an error.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
from dataclasses import dataclass, field, replace
from functools import cmp_to_key
from typing import ClassVar

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact
from gpuprov.facts.dumps import dump_files_script, parse_dumped_files
from gpuprov.facts.versions import rpm_version_compare

__all__ = [
    "DnfAvailable", "DnfModule", "DnfModules", "DnfRepoFiles", "DnfVersionlock", "RpmPackage",
    "RpmPackages", "VersionlockInfo", "parse_rpm_verify",
]

@dataclass(frozen=True)
class RpmPackage:
    name: str
    epoch: int
    version: str
    release: str
    arch: str
    #: requirements no installed package provides (`rpm -V --nofiles`), e.g.
    #: "requires libnvidia-ml.so.1()(64bit) (missing)"
    unmet: tuple[str, ...] = ()

    @property
    def evr(self) -> str:
        evr = f"{self.version}-{self.release}"
        return f"{self.epoch}:{evr}" if self.epoch else evr

    def matches(self, spec: str) -> bool:
        """spec as users write it: 580.95.05, 580.95.05-1.el9, 3:580.95.05-1.el9, 580.*"""
        forms = (self.version, f"{self.version}-{self.release}",
                 f"{self.epoch}:{self.version}-{self.release}")
        return any(spec == f or fnmatch.fnmatchcase(f, spec) for f in forms)


def _rpm_rows(output: str) -> list[RpmPackage]:
    rows = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 5:
            name, epoch, version, release, arch = fields
            rows.append(RpmPackage(name, int(epoch) if epoch.isdigit() else 0, version, release,
                                   arch))
    return rows


_UNSATISFIED = re.compile(r"^Unsatisfied dependencies for (\S+):$")
_NEEDED = re.compile(r"^\s+(.+?) is needed by ")


def parse_rpm_verify(lines: list[str]) -> dict[str, tuple[str, ...]]:
    """`rpm -Va --nofiles`'s dependency problems: NEVRA -> what is unmet."""
    unmet: dict[str, list[str]] = {}
    nevra = ""
    for line in lines:
        if m := _UNSATISFIED.match(line):
            nevra = m[1]
            unmet.setdefault(nevra, [])
        elif nevra and (m := _NEEDED.match(line)):
            unmet[nevra].append(f"requires {m[1]} (missing)")
        elif not line[:1].isspace():
            nevra = ""
    return {n: tuple(u) for n, u in unmet.items() if u}


@dataclass(frozen=True)
class RpmPackages(Fact[dict[str, tuple[RpmPackage, ...]]]):
    """name -> installed packages of that name (several for kernels, multilib).

    `rpm -Va --nofiles` runs with it: the rpm database's own dependency check,
    read-only and without dnf's lock. A package whose requirement was removed
    with `rpm -e --nodeps` looks installed to `rpm -qa`; only this sees it.
    """

    def command(self) -> Command:
        return Command.script(
            "command -v rpm >/dev/null 2>&1 || exit 0; "
            "rpm -qa --qf '%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH}\\n'; "
            "rpm -Va --nofiles --noscripts --nodigest --nosignature 2>&1 "
            "| sed 's/^/verify\\t/'; true")

    def process(self, output: str, exit_code: int) -> dict[str, tuple[RpmPackage, ...]]:
        result: dict[str, tuple[RpmPackage, ...]] = {}
        lines = output.splitlines()
        unmet = parse_rpm_verify([ln[7:] for ln in lines if ln.startswith("verify\t")])
        for row in _rpm_rows("\n".join(ln for ln in lines if not ln.startswith("verify\t"))):
            problems = unmet.get(f"{row.name}-{row.evr}.{row.arch}", ())
            if problems:
                row = replace(row, unmet=problems)
            result[row.name] = (*result.get(row.name, ()), row)
        return result


@dataclass(frozen=True)
class DnfAvailable(Fact["dict[str, tuple[RpmPackage, ...]] | None"]):
    """Versions of NAMES in the enabled repos, from dnf's cache only (-C: no
    network, module filtering applied). None when there is no cache yet:
    then nobody can know without a metadata download."""

    #: the system cache is root's; a user's dnf would download its own
    sudo: ClassVar[bool] = True
    names: tuple[str, ...]

    def command(self) -> Command:
        if not self.names:
            return Command("true")
        return Command(Raw("command -v dnf >/dev/null 2>&1 || exit 1;"),
                       "dnf", "-q", "-C", "repoquery", "--qf",
                       "%{name} %{epoch} %{version} %{release} %{arch}", "--", *self.names)

    def process(self, output: str, exit_code: int) -> dict[str, tuple[RpmPackage, ...]] | None:
        if not self.names:
            return {}
        if exit_code != 0:
            return None
        result: dict[str, tuple[RpmPackage, ...]] = {}
        for row in _rpm_rows(output):
            result[row.name] = (*result.get(row.name, ()), row)
        key = cmp_to_key(_by_evr)
        return {name: tuple(sorted(rows, key=key)) for name, rows in result.items()}


@dataclass(frozen=True)
class VersionlockInfo:
    plugin: bool                          # python3-dnf-plugin-versionlock installed
    entries: dict[str, str] = field(default_factory=dict)   # name -> locked spec line

    def locked(self, name: str) -> str | None:
        return self.entries.get(name)


_LOCK_ENTRY = re.compile(r"^(?P<name>.+)-(?:\d+:)?[^-:]+-[^-]+$")


@dataclass(frozen=True)
class DnfVersionlock(Fact[VersionlockInfo]):
    """The versionlock plugin's list file, read directly: `dnf versionlock
    list` would load repo metadata (slow, maybe network) to print it."""

    def command(self) -> Command:
        return Command.script(
            "if [ -f /etc/dnf/plugins/versionlock.conf ]; then echo 'plugin yes'; "
            "else echo 'plugin no'; fi; cat /etc/dnf/plugins/versionlock.list 2>/dev/null")

    def process(self, output: str, exit_code: int) -> VersionlockInfo:
        lines = output.splitlines()
        entries: dict[str, str] = {}
        for line in lines[1:]:
            line = line.strip()
            if not line or line.startswith(("#", "!")):   # '!' lines are excludes, not locks
                continue
            m = _LOCK_ENTRY.match(line)
            if m:
                entries[m["name"]] = line
        return VersionlockInfo(bool(lines) and lines[0] == "plugin yes", entries)


@dataclass(frozen=True)
class DnfModule:
    name: str
    stream: str
    state: str          # enabled | disabled | ''
    profiles: tuple[str, ...] = ()


@dataclass(frozen=True)
class DnfModules(Fact[dict[str, DnfModule]]):
    """Module states from /etc/dnf/modules.d/*.module: the files dnf itself
    keeps the enabled streams in. `dnf module list --enabled` would need repo
    metadata (root cache or a download) for the same answer."""

    def command(self) -> Command:
        return Command.script(dump_files_script("/etc/dnf/modules.d/*.module"))

    def process(self, output: str, exit_code: int) -> dict[str, DnfModule]:
        result: dict[str, DnfModule] = {}
        for text in parse_dumped_files(output).values():
            ini = configparser.ConfigParser(interpolation=None)
            ini.read_string(text)
            for section in ini.sections():
                sec = ini[section]
                profiles = tuple(p.strip() for p in sec.get("profiles", "").split(",")
                                 if p.strip())
                result[section] = DnfModule(sec.get("name", section), sec.get("stream", ""),
                                            sec.get("state", ""), profiles)
        return result

    @staticmethod
    def enabled(modules: dict[str, DnfModule]) -> dict[str, str]:
        return {m.name: m.stream for m in modules.values() if m.state == "enabled"}


@dataclass(frozen=True)
class DnfRepoFiles(Fact[dict[str, str]]):
    """Path -> content of /etc/yum.repos.d/*.repo."""

    def command(self) -> Command:
        return Command.script(dump_files_script("/etc/yum.repos.d/*.repo"))

    def process(self, output: str, exit_code: int) -> dict[str, str]:
        return parse_dumped_files(output)


def _by_evr(a: RpmPackage, b: RpmPackage) -> int:
    return rpm_version_compare(a.evr, b.evr)
