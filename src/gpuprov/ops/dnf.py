"""dnf operations (RHEL/Rocky/Alma 9): packages, versionlock, modules, repo files.

Candidates come from dnf's cache only (DnfAvailable, `dnf -C`), so check
mode never downloads metadata; with no cache it reports "unknown" and apply
lets dnf fetch metadata itself. `dnf install NAME-VERSION` installs exactly
that version whether it is higher or lower than the installed one (dnf's
documented behaviour), so no separate downgrade path is needed. The dnf
command line itself (network limits, failures explained) is ops/dnf_commands.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, field
from typing import Any

from gpuprov.command import Command
from gpuprov.facts.apt import AptKeyring
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.dnf import (
    DnfAvailable,
    DnfModules,
    DnfRepoFiles,
    DnfVersionlock,
    RpmPackage,
    RpmPackages,
)
from gpuprov.facts.versions import rpm_version_compare
from gpuprov.ops.atomic import write_file_step
from gpuprov.ops.base import Change, Diff, Op, Step, operation
from gpuprov.ops.dnf_commands import dnf as dnf  # roles and tests call dnf.dnf()
from gpuprov.ops.dnf_commands import dnf_step
from gpuprov.ops.keys import SigningKey
from gpuprov.ops.package_specs import PackageSpecs, package_resource, package_versions

VERSIONLOCK_PLUGIN = "python3-dnf-plugin-versionlock"



def _newest(rows: Iterable[RpmPackage]) -> RpmPackage | None:
    best: RpmPackage | None = None
    for row in rows:
        if best is None or rpm_version_compare(row.evr, best.evr) > 0:
            best = row
    return best


# ---------------------------------------------------------------- packages


@operation
class DnfPackages(Op):
    """RHEL-family packages in one dnf transaction.

    names: "pkg", ["a", "b"] or {"a": "580.95.05", "b": None}; a version may be
    VERSION, VERSION-RELEASE, EPOCH:VERSION-RELEASE or a glob ("580.*").
    state: present | latest | absent.
    depends_on: what provides the packages (shown when a candidate is unknown).
    source: the variable or role the names came from (named when one is refused).
    """

    names: PackageSpecs
    _: KW_ONLY
    state: str = "present"
    depends_on: str | None = None
    source: str = "dnf packages"
    #: `names` as {name: version or None}
    packages: dict[str, str | None] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.state not in ("present", "absent", "latest"):
            raise ValueError(f"dnf packages: state must be present|absent|latest, "
                             f"not {self.state!r}")
        self.packages = package_versions(self.names, "rpm", self.source)
        self.depends_on = (self.depends_on
                           or "a dnf repository op earlier in the play or dnf makecache")
        self.label = package_resource(list(self.packages))

    def facts(self) -> Sequence[Fact[Any]]:
        wanted: list[Fact[Any]] = [RpmPackages()]
        if self.state != "absent":
            wanted.append(DnfAvailable(tuple(sorted(self.packages))))
        return wanted

    def plan(self, facts: FactView) -> list[Change]:
        rpms: dict[str, tuple[RpmPackage, ...]] = facts[RpmPackages()]
        if self.state == "absent":
            gone = [n for n in self.packages if n in rpms]
            if not gone:
                return []
            return [Change(package_resource(gone), "remove",
                           "remove " + ", ".join(f"{n} {rpms[n][0].evr}" for n in gone),
                           [dnf_step("remove", packages=gone)],
                           Diff("rpm", "".join(f"{n} {rpms[n][0].evr}\n" for n in gone), None),
                           invalidates=None)]
        avail: dict[str, tuple[RpmPackage, ...]] | None = facts[
            DnfAvailable(tuple(sorted(self.packages)))]
        repair = self._repair(rpms)
        return self._plan_install(rpms, avail) + ([repair] if repair else [])

    def _repair(self, rpms: dict[str, tuple[RpmPackage, ...]]) -> Change | None:
        """Managed packages whose requirements no installed package provides
        (one was removed with --nodeps, or a transaction died half-way): dnf
        installs a provider of each, leaving the managed packages as they are."""
        broken = [p for name in self.packages for p in rpms.get(name, ()) if p.unmet]
        if not broken:
            return None
        needs = list(dict.fromkeys(_capability(u) for p in broken for u in p.unmet))
        return Change(
            resource=package_resource(list(dict.fromkeys(p.name for p in broken))),
            action="repair",
            summary="; ".join(f"repair {p.name}: {'; '.join(p.unmet)}" for p in broken),
            # a requirement as rpm names it ("libfoo >= 1.2", "libbar.so.1()(64bit)"):
            # dnf resolves it to the package providing it
            steps=[dnf_step("install", packages=needs)],
            diff=Diff("rpm", "".join(f"{p.name} {p.evr} ({'; '.join(p.unmet)})\n"
                                     for p in broken),
                      "".join(f"{p.name} {p.evr}\n" for p in broken)),
            invalidates=None)

    def _plan_install(self, rpms: dict[str, tuple[RpmPackage, ...]],
                      avail: dict[str, tuple[RpmPackage, ...]] | None) -> list[Change]:
        names: list[str] = []
        args, verbs, before, after, unknown = [], [], [], [], []
        for name, spec in self.packages.items():
            have = rpms.get(name, ())
            cur = _newest(have)
            rows = None if avail is None else avail.get(name, ())
            if spec:
                if any(p.matches(spec) for p in have):
                    continue
                match = [p for p in rows or () if p.matches(spec)]
                best = _newest(match)
                target = best.evr if best is not None else None
                arg = f"{name}-{spec}"
            else:
                newest = _newest(rows or ())
                if cur is not None and (self.state == "present" or (
                        newest is not None and rpm_version_compare(cur.evr, newest.evr) >= 0)):
                    continue
                target = newest.evr if newest else None
                arg = name
            if target is None:
                unknown.append(f"{'version ' + spec + ' of ' if spec else ''}{name}")
            shown = target or spec or "(version unknown)"
            if cur is None:
                verbs.append(f"install {arg}")
            else:
                order = rpm_version_compare(target, cur.evr) if target else 0
                verb = "downgrade" if order < 0 else "upgrade" if order > 0 else "change"
                verbs.append(f"{verb} {name} {cur.evr} -> {shown}")
            names.append(name)
            args.append(arg)
            before.append(f"{name} {cur.evr if cur else '(not installed)'}")
            after.append(f"{name} {shown}")
        if not args:
            return []
        why = ("the dnf cache is empty" if avail is None
               else "not in the enabled repositories' cache: " + ", ".join(unknown))
        firsts = {v.split(" ", 1)[0] for v in verbs}
        return [Change(
            resource=package_resource(names),
            action=firsts.pop() if len(firsts) == 1 else "install",
            summary="; ".join(verbs),
            steps=[dnf_step("install", packages=args)],
            diff=Diff("rpm", "".join(b + "\n" for b in before)
                      if any("(not installed)" not in b for b in before) else None,
                      "".join(a + "\n" for a in after)),
            unknown=f"{why}: depends on {self.depends_on}" if unknown else None,
            invalidates=None,   # packages add files, services, commands
        )]


def _capability(unmet: str) -> str:
    """"requires libfoo >= 1.2 (missing)" -> "libfoo >= 1.2"."""
    return unmet.removeprefix("requires ").removesuffix(" (missing)")


#: packages(names, state=, depends_on=): see DnfPackages
packages = DnfPackages


# ---------------------------------------------------------------- versionlock

_ENTRY = re.compile(r"^(?P<name>.+)-(?:(?P<epoch>\d+):)?(?P<version>[^-:]+)-(?P<release>[^-]+)$")


def _entry_matches(entry: str, name: str, spec: str | None) -> bool:
    if spec is None:
        return True
    m = _ENTRY.match(entry)
    if not m:
        return False
    release = m["release"]
    for suffix in (".*", ".x86_64", ".aarch64", ".noarch"):
        release = release.removesuffix(suffix)
    pkg = RpmPackage(name, int(m["epoch"] or 0), m["version"], release, "")
    return pkg.matches(spec)


@operation
class DnfVersionlockOp(Op):
    """dnf versionlock add/delete; {name: version} locks that version, a bare
    name locks whatever is installed. Installs the plugin when missing."""

    names: PackageSpecs
    state: str = "present"
    source: str = "dnf versionlock"
    #: `names` as {name: version or None}
    packages: dict[str, str | None] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.packages = package_versions(self.names, "rpm", self.source)
        self.label = f"versionlock {', '.join(self.packages)}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [DnfVersionlock()]

    def plan(self, facts: FactView) -> list[Change]:
        info = facts[DnfVersionlock()]
        changes: list[Change] = []
        for name, spec in self.packages.items():
            entry = info.locked(name)
            if self.state == "absent":
                if entry is not None:
                    changes.append(Change(f"versionlock {name}", "delete", f"unlock {entry}",
                                          [dnf_step("versionlock", "delete", packages=[name])],
                                          Diff("versionlock", entry + "\n", None),
                                          invalidates=(DnfVersionlock,)))
                continue
            if entry is not None and _entry_matches(entry, name, spec):
                continue
            steps = []
            plugin_missing = not info.plugin and not changes   # installed once, first
            if plugin_missing:
                steps.append(dnf_step("install", packages=[VERSIONLOCK_PLUGIN]))
            if entry is not None:
                steps.append(dnf_step("versionlock", "delete", packages=[name]))
            target = f"{name}-{spec}" if spec else name
            steps.append(dnf_step("versionlock", "add", packages=[target]))
            changes.append(Change(
                f"versionlock {name}", "create" if entry is None else "update",
                f"lock {target}" + ("" if spec else " at its installed version")
                + (f" (installs {VERSIONLOCK_PLUGIN})" if plugin_missing else ""),
                steps, Diff("versionlock", entry + "\n" if entry else None, target + "\n"),
                invalidates=(DnfVersionlock, RpmPackages) if plugin_missing
                else (DnfVersionlock,)))
        return changes


#: versionlock(names, state="present"): see DnfVersionlockOp
versionlock = DnfVersionlockOp


# ---------------------------------------------------------------- modules


@operation
class DnfModuleEnable(Op):
    """A module stream enabled, e.g. DnfModuleEnable("nvidia-driver", "580-open")
    on RHEL 9 (another enabled stream of it is reset first)."""

    name: str
    stream: str

    def __post_init__(self) -> None:
        super().__post_init__()
        self.label = f"dnf module {self.name}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [DnfModules()]

    def plan(self, facts: FactView) -> list[Change]:
        current = DnfModules.enabled(facts[DnfModules()]).get(self.name)
        if current == self.stream:
            return []
        steps = []
        if current is not None:
            # dnf refuses to switch an enabled stream without a reset first.
            steps.append(dnf_step("module", "reset", self.name))
        steps.append(dnf_step("module", "enable", f"{self.name}:{self.stream}"))
        return [Change(
            self.label, "enable" if current is None else "switch",
            f"enable module stream {self.name}:{self.stream}"
            + (f" (was {current})" if current else ""),
            steps,
            Diff(f"dnf module {self.name}", f"{self.name}:{current}\n" if current else None,
                 f"{self.name}:{self.stream}\n"),
            invalidates=(DnfModules, DnfAvailable))]


#: module_enable(name, stream): see DnfModuleEnable
module_enable = DnfModuleEnable


# ---------------------------------------------------------------- repo files


@operation
class DnfRepository(Op):
    """/etc/yum.repos.d/<name>.repo with gpgcheck=1; gpgkey is a URL (or list),
    key an armored public key (or a SigningKey, read only when planning)
    written to /etc/pki/rpm-gpg/RPM-GPG-KEY-<name>; options: more lines of
    the repo section (e.g. repo_gpgcheck=1)."""

    name: str
    baseurl: str
    _: KW_ONLY
    description: str | None = None
    gpgkey: str | Sequence[str] | None = None
    key: str | SigningKey | None = None
    gpgcheck: bool = True
    enabled: bool = True
    options: Mapping[str, str] | None = None
    path: str = field(init=False)
    key_path: str | None = field(init=False)
    #: the repo file's content
    text: str = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = self.name
        self.path = f"/etc/yum.repos.d/{name}.repo"
        self.key_path = f"/etc/pki/rpm-gpg/RPM-GPG-KEY-{name}" if self.key else None
        gpgkey = self.gpgkey
        keys = [gpgkey] if isinstance(gpgkey, str) else list(gpgkey or ())
        if self.key_path:
            keys.insert(0, f"file://{self.key_path}")
        if self.gpgcheck and not keys:
            raise ValueError(f"dnf repository {name}: gpgcheck=1 needs gpgkey or key")
        lines = ["# Managed by gpuprov: local edits are overwritten.", f"[{name}]",
                 f"name={self.description or name}", f"baseurl={self.baseurl}",
                 f"enabled={int(self.enabled)}", f"gpgcheck={int(self.gpgcheck)}"]
        if keys:
            lines.append(f"gpgkey={' '.join(keys)}")
        lines += [f"{k}={v}" for k, v in (self.options or {}).items()]
        self.text = "\n".join(lines) + "\n"
        self.label = f"dnf repository {name}"

    def facts(self) -> Sequence[Fact[Any]]:
        wanted: list[Fact[Any]] = [DnfRepoFiles()]
        if self.key_path:
            wanted.append(AptKeyring(self.key_path))   # a file's sha256; not apt-specific
        return wanted

    def key_text(self) -> str | None:
        """The armored key; a SigningKey is read now (SigningKeyError when it
        cannot be, or is not armored text)."""
        if not isinstance(self.key, SigningKey):
            return self.key
        try:
            return self.key.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.key.unusable(f"is not an ASCII-armored key: {exc}") from exc

    def plan(self, facts: FactView) -> list[Change]:
        changes: list[Change] = []
        key = self.key_text()
        if key and self.key_path:
            want = hashlib.sha256(key.encode()).hexdigest()
            have = facts[AptKeyring(self.key_path)]
            if have != want:
                changes.append(Change(
                    f"rpm key {self.key_path}", "create" if have is None else "update",
                    f"write {self.key_path}", [write_file_step(self.key_path, key.encode())],
                    invalidates=(AptKeyring,)))
        current = facts[DnfRepoFiles()].get(self.path)
        if current != self.text:
            changes.append(Change(
                f"dnf repo {self.path}", "create" if current is None else "update",
                f"write {self.path}", [write_file_step(self.path, self.text.encode())],
                Diff(self.path, current, self.text),
                invalidates=(DnfRepoFiles, DnfAvailable, DnfModules)))
        if changes:
            # Fill the cache now so DnfAvailable (cache-only) sees the repo.
            changes[-1].steps.append(Step(Command("dnf", "-q", "makecache", "--repo", self.name)))
        return changes


#: repository(name, baseurl, key=, gpgkey=, ...): see DnfRepository
repository = DnfRepository
