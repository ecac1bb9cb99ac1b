"""apt/dpkg facts: installed packages, holds, locks, candidates and apt's config.

Read-only and network-free. Each command first checks that its tool exists
and prints nothing otherwise, so asking an apt fact on RHEL gives an empty
answer, not an error. LC_ALL=C is set by the gather script, so apt-cache's
labels ("Installed:", "Candidate:") are not translated.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from gpuprov.command import Command, Raw
from gpuprov.facts.apt_joint import APT_CANDIDATES
from gpuprov.facts.base import Fact, Joint
from gpuprov.facts.debdeps import DebEntry, unmet_dependencies
from gpuprov.facts.dumps import dump_files_script, parse_dumped_files

__all__ = [
    "AptCacheAge", "AptCandidates", "AptKeyring", "AptPolicy", "AptPreferences", "AptSources",
    "AptVersion", "DebHeld", "DebPackage", "DebPackages", "DpkgInterrupted", "DpkgLock",
    "DpkgLocked",
    "parse_apt_policy",
]

# ---------------------------------------------------------------- dpkg

_INSTALLED_STATES = {"installed", "triggers-pending", "triggers-awaited"}


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str
    want: str = "install"       # install | hold | deinstall | purge | unknown
    status: str = "installed"   # installed | config-files | half-installed | unpacked | ...
    #: its unmet dependencies, in apt-get check's words: "depends on libfoo (not installed)"
    unmet: tuple[str, ...] = ()
    #: names in its Pre-Depends and Depends (alternatives included, versions dropped)
    depends: tuple[str, ...] = ()

    @property
    def installed(self) -> bool:
        return self.status in _INSTALLED_STATES

    @property
    def broken(self) -> bool:
        """Half-way states a reinstall (or dpkg --configure -a) must repair."""
        return self.status in {"half-installed", "unpacked", "half-configured"}


def _dependency_names(field: list[str]) -> tuple[str, ...]:
    """"libc6 (>= 2.34), a | b:any" -> ("libc6", "a", "b")."""
    names = (alt.split("(")[0].strip().split(":")[0]
             for f in field for dep in f.split(",") for alt in dep.split("|"))
    return tuple(dict.fromkeys(n for n in names if n))


#: dpkg-query's columns, in DebPackages' order
_DPKG_FIELDS = ("Package", "Architecture", "Version", "Status", "Multi-Arch", "Pre-Depends",
                "Depends", "Provides", "Breaks", "Conflicts")


@dataclass(frozen=True)
class DebPackages(Fact[dict[str, DebPackage]]):
    """Every package dpkg knows, with its state: key is the name, or
    name:arch for a foreign-architecture (multi-arch) package.

    A package whose dependency was force-removed looks "installed" to
    dpkg-query; its unmet dependencies (what `apt-get check` would say) are
    computed on the controller from dpkg's own fields (facts/debdeps.py), so
    the probe costs one dpkg-query, not a load of apt's whole package cache.
    """

    def command(self) -> Command:
        columns = "\\t".join(f"${{{f}}}" for f in _DPKG_FIELDS)
        return Command.script(
            "command -v dpkg-query >/dev/null 2>&1 || exit 0; "
            "printf 'native\\t%s\\n' \"$(dpkg --print-architecture)\"; "
            f"dpkg-query -W -f='{columns}\\n'")

    def process(self, output: str, exit_code: int) -> dict[str, DebPackage]:
        native = ""
        rows: list[tuple[DebEntry, str]] = []     # each package with its selection (want)
        for line in output.splitlines():
            fields = line.split("\t")
            if fields[0] == "native" and len(fields) == 2:
                native = fields[1]
                continue
            if len(fields) < 4:
                continue
            fields += [""] * (len(_DPKG_FIELDS) - len(fields))
            name, arch, version, status = fields[:4]
            want, _flag, state = (status.split() + ["", "", ""])[:3]
            key = name if arch in (native, "all", "") else f"{name}:{arch}"
            rows.append((DebEntry(key, name, arch, version, state, *fields[4:10]), want))
        unmet = unmet_dependencies((e for e, _ in rows), native)
        return {e.key: DebPackage(e.name, e.version, e.arch, want, e.status,
                                  unmet=unmet.get(e.key, ()),
                                  depends=_dependency_names([e.pre_depends, e.depends]))
                for e, want in rows}


@dataclass(frozen=True)
class DebHeld(Fact[frozenset[str]]):
    """Packages on hold (`apt-mark showhold`), names without :arch."""

    def command(self) -> Command:
        return Command.script("command -v apt-mark >/dev/null 2>&1 || exit 0; apt-mark showhold")

    def process(self, output: str, exit_code: int) -> frozenset[str]:
        return frozenset(ln.strip().split(":")[0] for ln in output.splitlines() if ln.strip())


#: dpkg's journal: status changes of a run, folded into its status file when the run ends
DPKG_UPDATES = "/var/lib/dpkg/updates"


@dataclass(frozen=True)
class DpkgInterrupted(Fact[bool]):
    """Was a dpkg run killed mid-way (a reboot, a lost connection)? Its journal
    then holds numbered entries never folded in, and every apt-get install or
    remove refuses ("dpkg was interrupted") until `dpkg --configure -a` runs."""

    def command(self) -> Command:
        return Command.script(f"ls -A {DPKG_UPDATES} 2>/dev/null; true")

    def process(self, output: str, exit_code: int) -> bool:
        # dpkg's own test: a name of digits only (tmp.i is a write in progress)
        return any(name.isdigit() for name in output.split())


@dataclass(frozen=True)
class DpkgLock:
    #: (lock file, pid, command line: its first 120 characters, or the process name)
    holders: tuple[tuple[str, int, str], ...] = ()

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
            "c=$(tr '\\000\\n' '  ' </proc/$pid/cmdline 2>/dev/null | cut -c1-120); "
            "[ -n \"${c% }\" ] || c=$(cat /proc/$pid/comm 2>/dev/null); "
            "printf 'held %s %s %s\\n' \"$f\" \"$pid\" \"${c% }\"; done")

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


#: a version pattern the probe's shell `case` matches as fnmatch does (no [...] sets)
_PLAIN_PATTERN = re.compile(r"[A-Za-z0-9.+~:*?-]*")

@dataclass(frozen=True)
class AptCandidates(Fact[dict[str, AptPolicy]]):
    """`apt-cache policy NAMES` from the local cache (no network). A name
    apt has never heard of is missing from the answer: its repository is
    not configured or `apt-get update` has not run since.

    `unless_installed` ((name, version pattern) pairs, "*" for any version):
    when dpkg has every one of them installed at a matching version, the
    probe answers {} without asking apt-cache, whose every call loads apt's
    whole package cache (0.3-1 s of CPU on a host with full archive lists).
    An op passes it only where such a package's plan never reads the
    candidate (see AptPackages). dpkg-query decides on the host, in the same
    round trip: an op cannot ask for a fact after reading another.
    """

    names: tuple[str, ...]
    unless_installed: tuple[tuple[str, str], ...] = ()
    #: the packages ops of a play share one probe (facts/apt_joint.py)
    joint: ClassVar[Joint | None] = APT_CANDIDATES

    def process(self, output: str, exit_code: int) -> dict[str, AptPolicy]:
        return parse_apt_policy(output)

    @classmethod
    def of(cls, names: object) -> AptCandidates:
        """Sorted and deduplicated, so two ops asking the same set share one probe."""
        return cls(tuple(sorted(set(names))))  # type: ignore[call-overload]

    @classmethod
    def unless(cls, packages: Mapping[str, str | None]) -> AptCandidates:
        """The candidates of `packages` ({name: version pattern or None}), not
        asked when dpkg has each installed at a matching version (None: any).
        A name with :arch, or a pattern the shell would read differently,
        makes the probe ask unconditionally."""
        wanted = tuple(sorted((name, spec or "*") for name, spec in packages.items()))
        if any(":" in name or not _PLAIN_PATTERN.fullmatch(spec) for name, spec in wanted):
            wanted = ()
        return cls(tuple(sorted(set(packages))), wanted)


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


APT_LISTS = "/var/lib/apt/lists"
APT_UPDATE_STAMP = "/var/lib/apt/periodic/update-success-stamp"


@dataclass(frozen=True)
class AptCacheAge(Fact["int | None"]):
    """Seconds since the last successful `apt-get update`; None if never.

    apt's own hook touches update-success-stamp after every successful
    update (Debian and Ubuntu ship it); without it, the lists directory.
    Lists with no Release or Packages file count as never updated, whatever
    the stamp or the directory's time say: images clear the lists after
    their own update, and a "fresh" empty cache made a package look missing
    (the kernel headers on a new host in `apply --check`).
    """

    def command(self) -> Command:
        return Command.script(
            f"for f in {APT_LISTS}/*Release {APT_LISTS}/*_Packages*; do "
            "if [ -e \"$f\" ]; then "
            f"for f in {APT_UPDATE_STAMP} {APT_LISTS}; do "
            "if [ -e \"$f\" ]; then echo \"$(date +%s) $(stat -c %Y \"$f\") $f\"; break; fi; "
            "done; break; fi; done")

    def process(self, output: str, exit_code: int) -> int | None:
        parts = output.split()
        if len(parts) < 3:
            return None
        return max(0, int(parts[0]) - int(parts[1]))
