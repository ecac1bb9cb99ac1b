"""apt packages: install, upgrade, downgrade, hold, remove in one apt-get
transaction each; the age-based `apt-get update`. The apt commands
themselves (lock wait, network timeouts, failures explained) are in
ops/apt_commands.py.

How the apt cache is kept fresh is told in ops/apt.py.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

from gpuprov.facts.apt import (
    AptCacheAge,
    AptCandidates,
    AptPolicy,
    DebHeld,
    DebPackage,
    DebPackages,
    DpkgInterrupted,
)
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.versions import deb_version_compare
from gpuprov.ops.apt_commands import (
    LOCK_TIMEOUT,
    NET_TIMEOUT,
    apt_mark,
    apt_step,
)
from gpuprov.ops.base import Change, Diff, Op, Step, operation
from gpuprov.ops.dpkg_repair import CONFIGURE_PENDING, finish_interrupted_dpkg
from gpuprov.ops.package_specs import (
    PackageSpecs,
    check_packages,
    package_resource,
    package_versions,
)

#: what a refresh of the apt lists changes
APT_CACHE_FACTS = (AptCandidates, AptCacheAge)
_HOLD_INVALIDATES = (DebHeld, DebPackages)


# ---------------------------------------------------------------- packages


@operation
class AptPackages(Op):
    """Debian/Ubuntu packages in one apt transaction.

    names: "pkg", ["a", "b"] or {"a": "1.2-1", "b": None} (exact version pins,
    apt globs like "580.95*" allowed; pinned packages install together, as
    the NVIDIA toolkit's exact-version dependencies require).
    state: present | latest | absent (purge=True also removes config files).
    held: True = apt-mark hold, False = unhold, None = leave as it is.
    depends_on: what provides the packages (shown when a candidate is unknown).
    source: the variable or role the names came from (named when one is refused).
    """

    names: PackageSpecs
    _: KW_ONLY
    state: str = "present"
    held: bool | None = None
    purge: bool = False
    install_recommends: bool = False
    lock_timeout: int = LOCK_TIMEOUT
    #: seconds apt waits on a silent repository (see apt_commands)
    net_timeout: int = NET_TIMEOUT
    depends_on: str | None = None
    source: str = "apt packages"
    #: `names` as {name: version or None}
    packages: dict[str, str | None] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.packages = package_versions(self.names)
        if self.state not in ("present", "absent", "latest"):
            raise ValueError("apt packages: state must be present|absent|latest, "
                             f"not {self.state!r}")
        if self.state != "present" and any(self.packages.values()):
            raise ValueError("apt packages: versions are only valid with state=present")
        check_packages(self.packages, "deb", self.source)
        self.depends_on = (self.depends_on
                           or "an apt repository op or apt update earlier in the play")
        self.label = package_resource(list(self.packages))

    def facts(self) -> Sequence[Fact[Any]]:
        wanted: list[Fact[Any]] = [DebPackages(), DebHeld(), DpkgInterrupted()]
        if self.state != "absent":
            wanted.append(self._candidates())
        return wanted

    def _candidates(self) -> AptCandidates:
        """state=present reads a package's candidate only where dpkg does not have
        it installed as wanted (see _classify): the probe skips apt-cache when
        dpkg has every one. latest compares with the candidate always."""
        if self.state == "latest":
            return AptCandidates.of(self.packages)
        return AptCandidates.unless(self.packages)

    def plan(self, facts: FactView) -> list[Change]:
        dpkg: dict[str, DebPackage] = facts[DebPackages()]
        held: frozenset[str] = facts[DebHeld()]
        repair = finish_interrupted_dpkg(facts)
        if self.state == "absent":
            return repair + self._plan_absent(dpkg, held)
        policy: dict[str, AptPolicy] = facts[self._candidates()]
        return repair + self._plan_present(dpkg, held, policy, configure=not repair)

    # -- install / upgrade / pin -------------------------------------------

    def _plan_present(self, dpkg: dict[str, DebPackage], held: frozenset[str],
                      policy: dict[str, AptPolicy], configure: bool = True) -> list[Change]:
        wanted = [self._classify(name, spec, _with_broken_dependencies(name, dpkg), name in held,
                                 policy.get(name))
                  for name, spec in self.packages.items()]
        moves = [w for w in wanted if not w.settled]
        to_hold = [w.name for w in wanted if w.to_hold]
        to_unhold = [w.name for w in wanted if w.to_unhold]
        changes = [self._install_change(moves, configure)] if moves else []
        if to_hold:
            changes.append(self._hold_change("hold", to_hold))
        if to_unhold:
            changes.append(self._hold_change("unhold", to_unhold))
        return changes

    def _classify(self, name: str, spec: str | None, cur: DebPackage | None, held: bool,
                  pol: AptPolicy | None) -> _Wanted:
        settled = self._settled(cur, spec, pol)
        # Installed as wanted but for its unmet dependencies: the repair
        # installs what is missing and leaves the package at its version.
        keeps = (cur is not None and bool(cur.unmet) and not settled
                 and self._settled(replace(cur, unmet=()), spec, pol))
        target = cur.version if keeps and cur is not None else _target(spec, pol)
        return _Wanted(name, spec, cur, held=held,
                       want_held=self.held if self.held is not None else held,
                       settled=settled, target=None if settled else target, keeps_version=keeps)

    def _settled(self, cur: DebPackage | None, spec: str | None, pol: AptPolicy | None) -> bool:
        """Installed as wanted: the version asked for, any version for state=present,
        the candidate for state=latest. A broken one (half-installed, or a
        dependency gone: apt-get check) never is."""
        installed = cur.version if cur is not None and cur.installed else None
        if not installed or cur is None or cur.unmet:
            return False
        if spec:
            return installed == spec or fnmatch.fnmatchcase(installed, spec)
        return self.state == "present" or installed == (pol.candidate if pol else None)

    def _install_change(self, moves: list[_Wanted], configure: bool = True) -> Change:
        """One apt-get transaction for every package to install, move or repair."""
        unknown = [why for w in moves if (why := w.unknown)]
        unhold = [w.name for w in moves if w.unhold_first and not w.keeps_version]
        hold_after = [w.name for w in moves if w.want_held and not w.keeps_version]
        installs = [w for w in moves if not w.keeps_version]
        steps: list[Step] = []
        if unknown:
            # No candidate in the local cache: a full update first heals a
            # host whose lists are empty or predate its repositories.
            steps.append(apt_step("update", lock_timeout=self.lock_timeout,
                                  net_timeout=self.net_timeout))
        if configure and any(w.kind == "repair" for w in moves):
            # An interrupted dpkg run makes every apt-get refuse until this runs
            # (configure=False: the op's dpkg repair runs it first).
            steps.append(Step(CONFIGURE_PENDING))
        if unhold:
            steps.append(apt_mark("unhold", unhold, self.lock_timeout))
        if any(w.keeps_version for w in moves):
            steps.append(self._fix_broken_step())
        if installs:
            steps.append(self._install_step(installs))
        if hold_after:
            steps.append(apt_mark("hold", hold_after, self.lock_timeout))
        kinds = {w.kind for w in moves}
        any_installed = any(w.version for w in moves)
        return Change(
            resource=package_resource([w.name for w in moves]),
            action=kinds.pop() if len(kinds) == 1 else "install",
            summary="; ".join(w.summary for w in moves)
            + (" (unhold, then hold again)" if unhold else ""),
            steps=steps,
            diff=Diff("dpkg", "".join(f"{w.dpkg_before}\n" for w in moves) if any_installed
                      else None, "".join(f"{w.dpkg_after}\n" for w in moves)),
            unknown=f"{'; '.join(unknown)}: depends on {self.depends_on}" if unknown else None,
            # A package can drop config files, start services, add
            # commands: every fact of the host may be stale after it.
            invalidates=None,
        )

    def _fix_broken_step(self) -> Step:
        """Installs what the packages' dependencies need, nothing else: apt skips
        a package already at the version asked for (`install pkg=ver` leaves its
        missing dependencies missing), and never removes one (--no-remove)."""
        opts = [] if self.install_recommends else ["--no-install-recommends"]
        return apt_step("install", "--fix-broken", "--no-remove", *opts,
                        "-o", "Dpkg::Options::=--force-confdef",
                        "-o", "Dpkg::Options::=--force-confold",
                        lock_timeout=self.lock_timeout, net_timeout=self.net_timeout)

    def _install_step(self, moves: list[_Wanted]) -> Step:
        opts = [] if self.install_recommends else ["--no-install-recommends"]
        if any(w.kind == "downgrade" for w in moves):
            opts.append("--allow-downgrades")
        return apt_step(
            "install", *opts, "-o", "Dpkg::Options::=--force-confdef",
            "-o", "Dpkg::Options::=--force-confold", packages=[w.arg for w in moves],
            lock_timeout=self.lock_timeout, net_timeout=self.net_timeout)

    def _hold_change(self, action: str, names: list[str]) -> Change:
        """apt-mark hold/unhold alone, for packages already at the wanted version."""
        return Change(
            resource=package_resource(names), action=action,
            summary=f"apt-mark {action} {' '.join(names)}",
            steps=[apt_mark(action, names, self.lock_timeout)],
            diff=Diff("dpkg holds",
                      "".join(f"{n} {_HOLD_WORD[action != 'hold']}\n" for n in names),
                      "".join(f"{n} {_HOLD_WORD[action == 'hold']}\n" for n in names)),
            invalidates=_HOLD_INVALIDATES)

    # -- remove / purge ------------------------------------------------------

    def _plan_absent(self, dpkg: dict[str, DebPackage], held: frozenset[str]) -> list[Change]:
        gone: list[str] = []
        for name in self.packages:
            cur = dpkg.get(name)
            if cur is None or cur.status == "not-installed":
                continue
            if cur.status == "config-files" and not self.purge:
                continue
            gone.append(name)
        if not gone:
            return []
        verb = "purge" if self.purge else "remove"
        steps: list[Step] = []
        unhold = [n for n in gone if n in held]
        if unhold:
            steps.append(apt_mark("unhold", unhold, self.lock_timeout))
        steps.append(apt_step(verb, packages=gone, lock_timeout=self.lock_timeout))
        return [Change(
            resource=package_resource(gone), action=verb,
            summary=f"{verb} " + ", ".join(f"{n} {dpkg[n].version}" for n in gone),
            steps=steps,
            diff=Diff("dpkg", "".join(f"{n} {dpkg[n].version}{_state_note(dpkg[n])}\n"
                                      for n in gone), None),
            invalidates=None,
        )]


@dataclass(frozen=True)
class _Wanted:
    """One package of a present/latest op, classified against what the host has."""

    name: str
    spec: str | None            # the version asked for (exact or an apt glob); None: any
    current: DebPackage | None  # what dpkg knows of it
    held: bool                  # on hold now
    want_held: bool             # on hold after the op
    settled: bool               # installed as wanted: at most its hold changes
    target: str | None          # the exact version apt would install; None: not in the cache
    keeps_version: bool = False  # a repair of unmet dependencies at the installed version

    @property
    def version(self) -> str | None:
        """The version dpkg has, a half-installed one included."""
        cur = self.current
        return cur.version if cur is not None and (cur.installed or cur.broken) else None

    @property
    def to_hold(self) -> bool:
        return (self.settled or self.keeps_version) and self.want_held and not self.held

    @property
    def to_unhold(self) -> bool:
        return (self.settled or self.keeps_version) and not self.want_held and self.held

    @property
    def kind(self) -> str:
        """install | repair | upgrade | downgrade | change (target unknown or equal)."""
        if self.version is None:
            return "install"
        if self.current is not None and (self.current.broken or self.keeps_version):
            return "repair"
        order = deb_version_compare(self.target, self.version) if self.target else 0
        return "downgrade" if order < 0 else "upgrade" if order > 0 else "change"

    @property
    def unhold_first(self) -> bool:
        """apt refuses to move a held package."""
        return self.held and self.version is not None

    @property
    def arg(self) -> str:
        """apt-get install's argument: name=version when a version was asked for."""
        return f"{self.name}={self.target or self.spec}" if self.spec else self.name

    @property
    def shown(self) -> str:
        return self.target or self.spec or "(candidate unknown)"

    @property
    def summary(self) -> str:
        if self.kind == "install":
            return f"install {self.arg}"
        if self.kind == "repair":
            assert self.current is not None
            if self.keeps_version:
                return f"repair {self.name}: {'; '.join(self.current.unmet)}"
            return f"repair {self.name} ({self.current.status}) -> {self.shown}"
        return f"{self.kind} {self.name} {self.version} -> {self.shown}"

    @property
    def unknown(self) -> str | None:
        """Why check mode cannot know what apt would install, if it cannot."""
        if self.target is not None:
            return None
        if self.spec:
            return f"version {self.spec} of {self.name} not in the apt cache"
        return f"a candidate for {self.name} not in the apt cache"

    @property
    def dpkg_before(self) -> str:
        unmet = f" ({'; '.join(self.current.unmet)})" if self.current and self.current.unmet else ""
        return (f"{self.name} {self.version or '(not installed)'}{unmet}"
                f"{' (held)' if self.held else ''}")

    @property
    def dpkg_after(self) -> str:
        return f"{self.name} {self.shown}{' (held)' if self.want_held else ''}"


def _target(spec: str | None, pol: AptPolicy | None) -> str | None:
    """The exact version apt would install for spec; None when the cache has none."""
    if pol is None:
        return None
    return pol.find(spec) if spec else pol.candidate


def _with_broken_dependencies(name: str, dpkg: dict[str, DebPackage]) -> DebPackage | None:
    """The package as dpkg knows it, its unmet dependencies extended by those
    (direct or not) that a fault left half-way (half-configured, unpacked...):
    apt-get check counts such a package as installed, dpkg --audit does not."""
    cur = dpkg.get(name)
    if cur is None or not cur.installed:
        return cur
    seen, todo, broken = {name}, list(cur.depends), []
    while todo:
        dep = todo.pop(0)
        if dep in seen or dep not in dpkg:
            continue
        seen.add(dep)
        if dpkg[dep].broken:
            broken.append(f"depends on {dep} ({dpkg[dep].status})")
        todo.extend(dpkg[dep].depends)
    return replace(cur, unmet=cur.unmet + tuple(broken)) if broken else cur


def _state_note(pkg: DebPackage) -> str:
    return "" if pkg.installed else f" ({pkg.status})"

_HOLD_WORD = {True: "held", False: "not held"}



# ---------------------------------------------------------------- apt-get update


@operation
class AptUpdate(Op):
    """`apt-get update` when the last successful one is older than cache_valid_time s."""

    cache_valid_time: int = 3600
    lock_timeout: int = LOCK_TIMEOUT
    net_timeout: int = NET_TIMEOUT

    def __post_init__(self) -> None:
        super().__post_init__()
        self.label = "apt cache"

    def facts(self) -> Sequence[Fact[Any]]:
        return [AptCacheAge()]

    def plan(self, facts: FactView) -> list[Change]:
        age: int | None = facts[AptCacheAge()]
        if age is not None and age <= self.cache_valid_time:
            return []
        why = "never updated" if age is None else f"{age}s old > {self.cache_valid_time}s"
        return [Change(resource="apt cache", action="update", summary=f"apt-get update ({why})",
                       steps=[apt_step("update", lock_timeout=self.lock_timeout,
                                       net_timeout=self.net_timeout)],
                       invalidates=APT_CACHE_FACTS)]
