"""Unmet dependencies of installed Debian packages, from dpkg's own data.

What `apt-get check` reports (a dependency force-removed, an installed one
at a version that no longer fits), computed on the controller from the
fields dpkg-query prints, so no probe loads apt's package cache (0.3-1 s of
CPU on a host with full archive lists). The words are apt-get check's,
reworded as DebPackage.unmet keeps them: "depends on libfoo (>= 1) (not
installed)".

The rules are dpkg's and apt's (Debian policy 7.1, 7.5; the MultiArch spec):
- a Depends/Pre-Depends group holds when one alternative does; an
  alternative holds when a package of that name, or one that Provides it, is
  on the host. Like apt-get check, any state but not-installed and
  config-files counts as on the host (a half-configured dependency is the
  caller's to report, see ops/apt_packages.py);
- a versioned relation needs a real package of a fitting version, or a
  versioned Provides (`foo (= 1.2)`) whose version fits; an unversioned
  Provides satisfies only unversioned relations;
- architecture: an unqualified dependency of an `arch` package takes a
  package of the same architecture, `all`, or one that is Multi-Arch:
  foreign; `:native` the host's own; `:any` takes any architecture (dpkg
  asks the target to be Multi-Arch: allowed; erring towards "met" never
  makes a repair that cannot converge);
- Breaks and Conflicts count real packages of other names only (a package
  that Provides and Conflicts with the same virtual name is the usual idiom
  for "one of these at a time", never a breakage), of any architecture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from gpuprov.facts.versions import deb_version_compare

__all__ = ["DebEntry", "Relation", "parse_relations", "unmet_dependencies"]

#: dpkg states in which a package counts as on the host for its dependants
_ABSENT = {"not-installed", "config-files", ""}
#: how apt-get check spells a relation ("<<" is shown as "<")
_SHOWN_OP = {"<<": "<", ">>": ">"}


@lru_cache(maxsize=8192)
def _compare(a: str, b: str) -> int:
    """deb_version_compare, remembered: a host's relations repeat the same few
    versions (libc6 (>= 2.34) hundreds of times), and each host asks again."""
    return 0 if a == b else deb_version_compare(a, b)


@dataclass(frozen=True)
class Relation:
    """One alternative of a relationship field: `name:arch (op version)`."""

    name: str
    arch: str | None = None     # the qualifier: any | native | an architecture; None: none
    op: str | None = None       # << <= = >= >> (and the obsolete < and >)
    version: str | None = None

    def fits(self, version: str) -> bool:
        """Whether `version` satisfies the relation's version part."""
        if self.op is None or self.version is None:
            return True
        order = _compare(version, self.version)
        if self.op == "<<":
            return order < 0
        if self.op in ("<=", "<"):      # "<" is the obsolete spelling of "<="
            return order <= 0
        if self.op == "=":
            return order == 0
        if self.op in (">=", ">"):
            return order >= 0
        return order > 0                # ">>"

    def __str__(self) -> str:
        name = f"{self.name}:{self.arch}" if self.arch else self.name
        if self.op is None:
            return name
        return f"{name} ({_SHOWN_OP.get(self.op, self.op)} {self.version})"


def _relation(text: str) -> Relation | None:
    name, _, rest = text.strip().partition("(")
    name = name.strip()
    if not name:
        return None
    name, _, arch = name.partition(":")
    op = version = None
    if rest:
        spec = rest.split(")")[0].strip()
        op = next((o for o in ("<<", "<=", ">=", ">>", "=", "<", ">") if spec.startswith(o)), None)
        if op is not None:
            version = spec[len(op):].strip() or None
            op = op if version else None
    return Relation(name, arch or None, op, version)


def parse_relations(field: str) -> list[tuple[Relation, ...]]:
    """"a (>= 1) | b:any, c" -> [(a >= 1, b:any), (c,)]: groups of alternatives."""
    groups = []
    for group in field.split(","):
        alts = tuple(r for alt in group.split("|") if (r := _relation(alt)) is not None)
        if alts:
            groups.append(alts)
    return groups


@dataclass(frozen=True)
class DebEntry:
    """One line of dpkg-query: a package with the fields the check reads."""

    key: str                # name, or name:arch for a foreign-architecture package
    name: str
    arch: str
    version: str
    status: str             # dpkg's state: installed, half-configured, config-files...
    multi_arch: str = ""    # same | foreign | allowed | no ("" when dpkg has none)
    pre_depends: str = ""
    depends: str = ""
    provides: str = ""
    breaks: str = ""
    conflicts: str = ""

    @property
    def present(self) -> bool:
        return self.status not in _ABSENT


class _Host:
    """What is on the host, by the names a relation can meet."""

    def __init__(self, entries: Iterable[DebEntry], native: str) -> None:
        self.native = native
        self.real: dict[str, list[DebEntry]] = {}
        #: virtual name -> (provider, the provided version or None)
        self.virtual: dict[str, list[tuple[DebEntry, str | None]]] = {}
        for e in entries:
            if not e.present:
                continue
            self.real.setdefault(e.name, []).append(e)
            for group in parse_relations(e.provides):
                for rel in group:
                    self.virtual.setdefault(rel.name, []).append(
                        (e, rel.version if rel.op == "=" else None))

    def arch_fits(self, rel: Relation, dependant: DebEntry, target: DebEntry) -> bool:
        if rel.arch == "any":
            return True
        if rel.arch == "native":
            return target.arch in (self.native, "all")
        if rel.arch:
            return target.arch == rel.arch
        own = self.native if dependant.arch == "all" else dependant.arch
        return target.arch in (own, "all") or target.multi_arch == "foreign"

    def meets(self, rel: Relation, dependant: DebEntry) -> bool:
        if any(self.arch_fits(rel, dependant, e) and rel.fits(e.version)
               for e in self.real.get(rel.name, ())):
            return True
        return any(self.arch_fits(rel, dependant, provider)
                   and (rel.op is None or (provided is not None and rel.fits(provided)))
                   for provider, provided in self.virtual.get(rel.name, ()))

    def why(self, rel: Relation) -> str:
        """apt-get check's reason for an alternative that is not met."""
        there = self.real.get(rel.name)
        return f"({there[0].version} is installed)" if there else "(not installed)"

    def clashes(self, rel: Relation, entry: DebEntry) -> list[DebEntry]:
        return [e for e in self.real.get(rel.name, ())
                if e.name != entry.name and rel.fits(e.version)]


def _unmet_of(host: _Host, entry: DebEntry) -> list[str]:
    unmet = []
    for verb, field in (("pre-depends on", entry.pre_depends), ("depends on", entry.depends)):
        for group in parse_relations(field):
            if not any(host.meets(rel, entry) for rel in group):
                unmet.append(f"{verb} " + " or ".join(f"{rel} {host.why(rel)}" for rel in group))
    for verb, field in (("breaks", entry.breaks), ("conflicts with", entry.conflicts)):
        for group in parse_relations(field):
            for rel in group:
                unmet += [f"{verb} {rel} ({e.version} is installed)"
                          for e in host.clashes(rel, entry)[:1]]
    return unmet


def unmet_dependencies(entries: Iterable[DebEntry], native: str) -> dict[str, tuple[str, ...]]:
    """Package key -> its unmet relations, for every package on the host that has some."""
    entries = list(entries)
    host = _Host(entries, native)
    result = {}
    for entry in entries:
        if entry.present and (unmet := _unmet_of(host, entry)):
            result[entry.key] = tuple(unmet)
    return result
