"""Package-manager facts: dpkg/apt and rpm/dnf, read-only and network-free.

Each command first checks that its tool exists and prints nothing
otherwise, so asking a Debian fact on RHEL (or the reverse) gives an empty
answer, not an error. LC_ALL=C is set by the gather script, so apt-cache's
labels ("Installed:", "Candidate:") are not translated.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import ClassVar

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact, FactError

__all__ = [
    "AptCacheAge", "AptCandidates", "AptKeyring", "AptPolicy", "AptPreferences", "AptSources",
    "AptVersion", "DebHeld", "DebPackage", "DebPackages", "DnfAvailable", "DnfModule",
    "DnfModules", "DnfRepoFiles", "DnfVersionlock", "DpkgLock", "DpkgLocked", "RpmPackage",
    "RpmPackages", "VersionlockInfo", "deb_version_compare", "rpm_version_compare",
]

# ---------------------------------------------------------------- file dumps

_FILE_BEGIN = "@@gpuprov-file "
_FILE_END = "\n@@gpuprov-file-end\n"


def dump_files_script(*globs: str) -> str:
    """sh that prints every existing file of `globs` between marker lines.

    The end marker is preceded by a newline we add, so contents come back
    byte for byte, whether or not the file ends with a newline.
    """
    pattern = " ".join(globs)  # globs are our own constants: left unquoted to expand
    return (f"for f in {pattern}; do [ -f \"$f\" ] || continue; "
            f"printf '{_FILE_BEGIN}%s\\n' \"$f\"; cat -- \"$f\"; "
            "printf '\\n@@gpuprov-file-end\\n'; done")


def parse_dumped_files(output: str) -> dict[str, str]:
    files: dict[str, str] = {}
    pos = 0
    while True:
        start = output.find(_FILE_BEGIN, pos)
        if start < 0:
            return files
        eol = output.index("\n", start)
        path = output[start + len(_FILE_BEGIN):eol]
        end = output.find(_FILE_END, eol)
        if end < 0:
            raise FactError(f"{path}: file dump not terminated")
        files[path] = output[eol + 1:end]
        pos = end + len(_FILE_END)


# ---------------------------------------------------------------- dpkg

_INSTALLED_STATES = {"installed", "triggers-pending", "triggers-awaited"}


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str
    want: str = "install"       # install | hold | deinstall | purge | unknown
    status: str = "installed"   # installed | config-files | half-installed | unpacked | ...

    @property
    def installed(self) -> bool:
        return self.status in _INSTALLED_STATES

    @property
    def broken(self) -> bool:
        """Half-way states a reinstall (or dpkg --configure -a) must repair."""
        return self.status in {"half-installed", "unpacked", "half-configured"}


@dataclass(frozen=True)
class DebPackages(Fact[dict[str, DebPackage]]):
    """Every package dpkg knows, with its state: key is the name, or
    name:arch for a foreign-architecture (multi-arch) package."""

    def command(self) -> Command:
        return Command.script(
            "command -v dpkg-query >/dev/null 2>&1 || exit 0; "
            "printf 'native\\t%s\\n' \"$(dpkg --print-architecture)\"; "
            "dpkg-query -W -f='${Package}\\t${Architecture}\\t${Version}\\t${Status}\\n'")

    def process(self, output: str, exit_code: int) -> dict[str, DebPackage]:
        native = ""
        packages: dict[str, DebPackage] = {}
        for line in output.splitlines():
            fields = line.split("\t")
            if fields[0] == "native" and len(fields) == 2:
                native = fields[1]
                continue
            if len(fields) != 4:
                continue
            name, arch, version, status = fields
            want, _flag, state = (status.split() + ["", "", ""])[:3]
            key = name if arch in (native, "all", "") else f"{name}:{arch}"
            packages[key] = DebPackage(name, version, arch, want, state)
        return packages


@dataclass(frozen=True)
class DebHeld(Fact[frozenset[str]]):
    """Packages on hold (`apt-mark showhold`), names without :arch."""

    def command(self) -> Command:
        return Command.script("command -v apt-mark >/dev/null 2>&1 || exit 0; apt-mark showhold")

    def process(self, output: str, exit_code: int) -> frozenset[str]:
        return frozenset(ln.strip().split(":")[0] for ln in output.splitlines() if ln.strip())


@dataclass(frozen=True)
class DpkgLock:
    holders: tuple[tuple[str, int, str], ...] = ()   # (lock file, pid, command name)

    @property
    def held(self) -> bool:
        return bool(self.holders)

    def describe(self) -> str:
        return ", ".join(f"{path} by {comm or '?'} (pid {pid})" for path, pid, comm in self.holders)


_LOCK_FILES = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock",
               "/var/cache/apt/archives/lock")


@dataclass(frozen=True)
class DpkgLocked(Fact[DpkgLock]):
    """Is an apt/dpkg lock held right now, and by whom (e.g. unattended-upgr)?

    apt and dpkg take fcntl() locks, which `flock -n` does not see, and the
    lock files are root-only; /proc/locks lists fcntl locks for everyone, so
    matching the files' inodes there answers without sudo and without ever
    taking the lock.
    """

    paths: tuple[str, ...] = _LOCK_FILES

    def command(self) -> Command:
        awk = ('$2 != "->" { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9a-f]+:[0-9a-f]+:[0-9]+$/) '
               '{ split($i, p, ":"); if (p[3] == ino) print f, $(i-1) } }')
        return Command.script(
            Command("for", "f", Raw("in"), *self.paths).shell() + "; do [ -e \"$f\" ] || continue; "
            "set -- $(ls -di \"$f\"); "
            f"awk -v f=\"$f\" -v ino=\"$1\" '{awk}' /proc/locks; "
            "done | while read -r f pid; do "
            "printf 'held %s %s %s\\n' \"$f\" \"$pid\" "
            "\"$(cat /proc/$pid/comm 2>/dev/null)\"; done")

    def process(self, output: str, exit_code: int) -> DpkgLock:
        holders = []
        for line in output.splitlines():
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "held" and parts[2].isdigit():
                holders.append((parts[1], int(parts[2]), parts[3] if len(parts) > 3 else ""))
        return DpkgLock(tuple(holders))


# ---------------------------------------------------------------- apt

@dataclass(frozen=True)
class AptVersion:
    version: str
    priority: int
    sources: tuple[str, ...] = ()
    installed: bool = False


@dataclass(frozen=True)
class AptPolicy:
    """One package of `apt-cache policy`: what is installed and what apt would install."""

    name: str
    installed: str | None
    candidate: str | None
    versions: tuple[AptVersion, ...] = ()

    def find(self, spec: str) -> str | None:
        """The version of the table matching `spec` (exact, or an apt glob like 580.95*)."""
        for v in self.versions:
            if v.version == spec or fnmatch.fnmatchcase(v.version, spec):
                return v.version
        return None


_POLICY_VERSION = re.compile(r"^ (?:\*\*\*| {3}) (\S+) (-?\d+)$")
_POLICY_SOURCE = re.compile(r"^ {8}(-?\d+) (.+)$")


def parse_apt_policy(output: str) -> dict[str, AptPolicy]:
    result: dict[str, AptPolicy] = {}
    name: str | None = None
    fields: dict[str, str] = {}
    versions: list[AptVersion] = []

    def flush() -> None:
        if name is None:
            return
        none = {"(none)", ""}
        inst, cand = fields.get("Installed", ""), fields.get("Candidate", "")
        result[name] = AptPolicy(name, None if inst in none else inst,
                                 None if cand in none else cand, tuple(versions))

    for line in output.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            flush()
            name, fields, versions = line[:-1], {}, []
        elif name is None:
            continue
        elif m := _POLICY_VERSION.match(line):
            versions.append(AptVersion(m[1], int(m[2]), (), line.startswith(" ***")))
        elif (m := _POLICY_SOURCE.match(line)) and versions:
            last = versions[-1]
            versions[-1] = AptVersion(last.version, last.priority, (*last.sources, m[2].strip()),
                                      last.installed)
        elif ":" in line:
            key, _, value = line.strip().partition(":")
            fields[key] = value.strip()
    flush()
    return result


@dataclass(frozen=True)
class AptCandidates(Fact[dict[str, AptPolicy]]):
    """`apt-cache policy NAMES` from the local cache (no network). A name
    apt has never heard of is missing from the answer: its repository is
    not configured or `apt-get update` has not run since."""

    names: tuple[str, ...]

    def command(self) -> Command:
        if not self.names:
            return Command("true")
        return Command(Raw("command -v apt-cache >/dev/null 2>&1 || exit 0;"),
                       "apt-cache", "policy", "--", *self.names)

    def process(self, output: str, exit_code: int) -> dict[str, AptPolicy]:
        return parse_apt_policy(output)

    @classmethod
    def of(cls, names: object) -> AptCandidates:
        """Sorted and deduplicated, so two ops asking the same set share one probe."""
        return cls(tuple(sorted(set(names))))  # type: ignore[call-overload]


@dataclass(frozen=True)
class AptSources(Fact[dict[str, str]]):
    """Path -> content of /etc/apt/sources.list and sources.list.d/*.list|*.sources."""

    def command(self) -> Command:
        return Command.script(dump_files_script(
            "/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list",
            "/etc/apt/sources.list.d/*.sources"))

    def process(self, output: str, exit_code: int) -> dict[str, str]:
        return parse_dumped_files(output)


@dataclass(frozen=True)
class AptPreferences(Fact[dict[str, str]]):
    """Path -> content of /etc/apt/preferences and preferences.d/* (apt pins)."""

    def command(self) -> Command:
        return Command.script(dump_files_script("/etc/apt/preferences",
                                                "/etc/apt/preferences.d/*"))

    def process(self, output: str, exit_code: int) -> dict[str, str]:
        return parse_dumped_files(output)


@dataclass(frozen=True)
class AptKeyring(Fact["str | None"]):
    """sha256 of a (binary) keyring file, None when absent: keyrings are
    compared by checksum, never shipped back to the controller."""

    path: str

    def command(self) -> Command:
        return Command("test", "-f", self.path).then(Command("sha256sum", self.path))

    def process(self, output: str, exit_code: int) -> str | None:
        return output.split()[0] if exit_code == 0 and output.strip() else None


@dataclass(frozen=True)
class AptCacheAge(Fact["int | None"]):
    """Seconds since the last successful `apt-get update`; None if never.

    apt's own hook touches update-success-stamp after every successful
    update (Debian and Ubuntu ship it); without it, the lists directory.
    """

    def command(self) -> Command:
        return Command.script(
            "for f in /var/lib/apt/periodic/update-success-stamp /var/lib/apt/lists; do "
            "if [ -e \"$f\" ]; then echo \"$(date +%s) $(stat -c %Y \"$f\") $f\"; break; fi; done")

    def process(self, output: str, exit_code: int) -> int | None:
        parts = output.split()
        if len(parts) < 3:
            return None
        return max(0, int(parts[0]) - int(parts[1]))


# ---------------------------------------------------------------- rpm / dnf

@dataclass(frozen=True)
class RpmPackage:
    name: str
    epoch: int
    version: str
    release: str
    arch: str

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


@dataclass(frozen=True)
class RpmPackages(Fact[dict[str, tuple[RpmPackage, ...]]]):
    """name -> installed packages of that name (several for kernels, multilib)."""

    def command(self) -> Command:
        return Command.script(
            "command -v rpm >/dev/null 2>&1 || exit 0; "
            "rpm -qa --qf '%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH}\\n'")

    def process(self, output: str, exit_code: int) -> dict[str, tuple[RpmPackage, ...]]:
        result: dict[str, tuple[RpmPackage, ...]] = {}
        for row in _rpm_rows(output):
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
        key = cmp_to_key(lambda a, b: rpm_version_compare(a.evr, b.evr))
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


# ---------------------------------------------------------------- version order
# Ports of dpkg's verrevcmp and rpm's rpmvercmp: roles compare driver
# branches and ops tell an upgrade from a downgrade without asking the host.

def _deb_order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit() or not c:
        return 0
    return ord(c) if c.isalpha() else ord(c) + 256


def _deb_verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _deb_order(a[i] if i < len(a) else "")
            bc = _deb_order(b[j] if j < len(b) else "")
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        m = re.match(r"0*(\d*)", a[i:])
        n = re.match(r"0*(\d*)", b[j:])
        assert m and n
        i, j = i + m.end(), j + n.end()
        da, db = m[1], n[1]
        if len(da) != len(db):
            return len(da) - len(db)
        if da != db:
            return -1 if da < db else 1
    return 0


def _split_deb(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def deb_version_compare(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version a sorts before, equal to, after b."""
    ea, ua, ra = _split_deb(a)
    eb, ub, rb = _split_deb(b)
    if ea != eb:
        return ea - eb
    return _deb_verrevcmp(ua, ub) or _deb_verrevcmp(ra, rb)


def _rpmvercmp(a: str, b: str) -> int:
    if a == b:
        return 0
    ta = re.findall(r"~|\^|\d+|[A-Za-z]+", a)
    tb = re.findall(r"~|\^|\d+|[A-Za-z]+", b)
    for k in range(max(len(ta), len(tb))):
        x = ta[k] if k < len(ta) else None
        y = tb[k] if k < len(tb) else None
        if x == "~" or y == "~":          # tilde sorts before anything, even the end
            if x != y:
                return -1 if x == "~" else 1
            continue
        if x == "^" or y == "^":          # caret sorts after the end, before anything else
            if x == y:
                continue
            if x is None:
                return -1
            if y is None:
                return 1
            return -1 if x == "^" else 1
        if x is None or y is None:
            return -1 if x is None else 1
        if x.isdigit() != y.isdigit():    # a numeric segment is newer than an alpha one
            return 1 if x.isdigit() else -1
        if x.isdigit():
            x, y = x.lstrip("0"), y.lstrip("0")
            if len(x) != len(y):
                return len(x) - len(y)
        if x != y:
            return -1 if x < y else 1
    return 0


def rpm_version_compare(a: str, b: str) -> int:
    """<0, 0, >0 for rpm [epoch:]version[-release] strings."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), version, release
    ea, va, ra = split(a)
    eb, vb, rb = split(b)
    if ea != eb:
        return ea - eb
    return _rpmvercmp(va, vb) or _rpmvercmp(ra, rb)
