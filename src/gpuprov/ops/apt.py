"""apt operations: packages, holds, repositories (with their keys), pins, cache.

How the apt cache is kept fresh (no blind `apt-get update` on every run):
- apt_repository(): a Change that writes a source or its key ends with an
  `apt-get update` of THAT source only (Dir::Etc::sourcelist=<file>), so the
  packages op after it sees the new candidates when the engine re-gathers
  facts, and a converged host never runs an update.
- packages(): when a package to install has no candidate in the local cache
  (repo not configured yet, or a fresh cloud image with empty lists), check
  mode reports the change as unknown ("depends on ..."), and apply prepends a
  full `apt-get update` to the install, so a half-done earlier run heals.
- apt_update(cache_valid_time): the explicit, age-based refresh.
Every apt/dpkg call waits for the lock (unattended-upgrades on fresh VMs)
for `lock_timeout` seconds instead of failing at once.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpuprov.command import Command
from gpuprov.facts.apt import (
    AptCacheAge,
    AptCandidates,
    AptKeyring,
    AptPolicy,
    AptPreferences,
    AptSources,
    DebHeld,
    DebPackage,
    DebPackages,
)
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.versions import deb_version_compare
from gpuprov.ops.atomic import remove_file_step, write_file_step
from gpuprov.ops.base import Change, Diff, Op, Step

LOCK_TIMEOUT = 120
_APT_INVALIDATES = (AptCandidates, AptCacheAge)
_HOLD_INVALIDATES = (DebHeld, DebPackages)


def apt_get(*args: str, lock_timeout: int = LOCK_TIMEOUT) -> Command:
    """apt-get, non-interactive, waiting up to lock_timeout s for the dpkg lock.

    NEEDRESTART_MODE=l: Ubuntu's needrestart would otherwise restart services
    (sshd, docker) behind the play's back; gpuprov restarts via handlers.
    """
    return Command("env", "DEBIAN_FRONTEND=noninteractive", "NEEDRESTART_MODE=l", "apt-get",
                   *args[:1], "-y", "-o", f"DPkg::Lock::Timeout={lock_timeout}", *args[1:])


def apt_mark(action: str, names: Iterable[str], lock_timeout: int = LOCK_TIMEOUT) -> Step:
    return Step(Command("apt-mark", "-o", f"DPkg::Lock::Timeout={lock_timeout}", action,
                        *names))


def _pkg_resource(names: Sequence[str]) -> str:
    return f"package {names[0]}" if len(names) == 1 else f"packages {', '.join(names)}"


# ---------------------------------------------------------------- packages


class AptPackages(Op):
    def __init__(self, packages: Mapping[str, str | None], *, state: str = "present",
                 held: bool | None = None, purge: bool = False, install_recommends: bool = False,
                 lock_timeout: int = LOCK_TIMEOUT, depends_on: str | None = None) -> None:
        if state not in ("present", "absent", "latest"):
            raise ValueError(f"apt packages: state must be present|absent|latest, not {state!r}")
        if state != "present" and any(packages.values()):
            raise ValueError("apt packages: versions are only valid with state=present")
        self.packages = dict(packages)
        self.state = state
        self.held = held
        self.purge = purge
        self.install_recommends = install_recommends
        self.lock_timeout = lock_timeout
        self.depends_on = depends_on or "an apt repository op or apt update earlier in the play"
        self.label = _pkg_resource(list(self.packages))

    def facts(self) -> Sequence[Fact[Any]]:
        wanted: list[Fact[Any]] = [DebPackages(), DebHeld()]
        if self.state != "absent":
            wanted.append(AptCandidates.of(self.packages))
        return wanted

    def plan(self, facts: FactView) -> list[Change]:
        dpkg: dict[str, DebPackage] = facts[DebPackages()]
        held: frozenset[str] = facts[DebHeld()]
        if self.state == "absent":
            return self._plan_absent(dpkg, held)
        policy: dict[str, AptPolicy] = facts[AptCandidates.of(self.packages)]
        return self._plan_present(dpkg, held, policy)

    # -- install / upgrade / pin -------------------------------------------

    def _plan_present(self, dpkg: dict[str, DebPackage], held: frozenset[str],
                      policy: dict[str, AptPolicy]) -> list[Change]:
        wanted = [self._classify(name, spec, dpkg.get(name), name in held, policy.get(name))
                  for name, spec in self.packages.items()]
        moves = [w for w in wanted if not w.settled]
        to_hold = [w.name for w in wanted if w.to_hold]
        to_unhold = [w.name for w in wanted if w.to_unhold]
        changes = [self._install_change(moves)] if moves else []
        if to_hold:
            changes.append(self._hold_change("hold", to_hold))
        if to_unhold:
            changes.append(self._hold_change("unhold", to_unhold))
        return changes

    def _classify(self, name: str, spec: str | None, cur: DebPackage | None, held: bool,
                  pol: AptPolicy | None) -> _Wanted:
        settled = self._settled(cur, spec, pol)
        return _Wanted(name, spec, cur, held=held,
                       want_held=self.held if self.held is not None else held,
                       settled=settled, target=None if settled else _target(spec, pol))

    def _settled(self, cur: DebPackage | None, spec: str | None, pol: AptPolicy | None) -> bool:
        """Installed as wanted: the version asked for, any version for state=present,
        the candidate for state=latest. A broken (half-installed) one never is."""
        installed = cur.version if cur is not None and cur.installed else None
        if not installed:
            return False
        if spec:
            return installed == spec or fnmatch.fnmatchcase(installed, spec)
        return self.state == "present" or installed == (pol.candidate if pol else None)

    def _install_change(self, moves: list[_Wanted]) -> Change:
        """One apt-get transaction for every package to install, move or repair."""
        unknown = [why for w in moves if (why := w.unknown)]
        unhold = [w.name for w in moves if w.unhold_first]
        hold_after = [w.name for w in moves if w.want_held]
        steps: list[Step] = []
        if unknown:
            # No candidate in the local cache: a full update first heals a
            # host whose lists are empty or predate its repositories.
            steps.append(Step(apt_get("update", lock_timeout=self.lock_timeout)))
        if any(w.kind == "repair" for w in moves):
            # An interrupted dpkg run makes every apt-get refuse until this runs.
            steps.append(Step(Command(
                "env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--configure", "-a",
                "--force-confdef", "--force-confold")))
        if unhold:
            steps.append(apt_mark("unhold", unhold, self.lock_timeout))
        steps.append(self._install_step(moves))
        if hold_after:
            steps.append(apt_mark("hold", hold_after, self.lock_timeout))
        kinds = {w.kind for w in moves}
        any_installed = any(w.version for w in moves)
        return Change(
            resource=_pkg_resource([w.name for w in moves]),
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

    def _install_step(self, moves: list[_Wanted]) -> Step:
        opts = [] if self.install_recommends else ["--no-install-recommends"]
        if any(w.kind == "downgrade" for w in moves):
            opts.append("--allow-downgrades")
        return Step(apt_get(
            "install", *opts, "-o", "Dpkg::Options::=--force-confdef",
            "-o", "Dpkg::Options::=--force-confold", *(w.arg for w in moves),
            lock_timeout=self.lock_timeout))

    def _hold_change(self, action: str, names: list[str]) -> Change:
        """apt-mark hold/unhold alone, for packages already at the wanted version."""
        return Change(
            resource=_pkg_resource(names), action=action,
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
        steps.append(Step(apt_get(verb, *gone, lock_timeout=self.lock_timeout)))
        return [Change(
            resource=_pkg_resource(gone), action=verb,
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

    @property
    def version(self) -> str | None:
        """The version dpkg has, a half-installed one included."""
        cur = self.current
        return cur.version if cur is not None and (cur.installed or cur.broken) else None

    @property
    def to_hold(self) -> bool:
        return self.settled and self.want_held and not self.held

    @property
    def to_unhold(self) -> bool:
        return self.settled and not self.want_held and self.held

    @property
    def kind(self) -> str:
        """install | repair | upgrade | downgrade | change (target unknown or equal)."""
        if self.version is None:
            return "install"
        if self.current is not None and self.current.broken:
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
        return f"{self.name} {self.version or '(not installed)'}{' (held)' if self.held else ''}"

    @property
    def dpkg_after(self) -> str:
        return f"{self.name} {self.shown}{' (held)' if self.want_held else ''}"


def _target(spec: str | None, pol: AptPolicy | None) -> str | None:
    """The exact version apt would install for spec; None when the cache has none."""
    if pol is None:
        return None
    return pol.find(spec) if spec else pol.candidate


def _state_note(pkg: DebPackage) -> str:
    return "" if pkg.installed else f" ({pkg.status})"

_HOLD_WORD = {True: "held", False: "not held"}


def _as_mapping(names: str | Iterable[str] | Mapping[str, str | None]) -> dict[str, str | None]:
    if isinstance(names, str):
        return {names: None}
    if isinstance(names, Mapping):
        return {n: (str(v) if v is not None else None) for n, v in names.items()}
    return dict.fromkeys(names)


def packages(names: str | Iterable[str] | Mapping[str, str | None], *, state: str = "present",
             held: bool | None = None, purge: bool = False, install_recommends: bool = False,
             lock_timeout: int = LOCK_TIMEOUT, depends_on: str | None = None) -> AptPackages:
    """Debian/Ubuntu packages in one apt transaction.

    names: "pkg", ["a", "b"] or {"a": "1.2-1", "b": None} (exact version pins,
    apt globs like "580.95*" allowed; pinned packages install together, as
    the NVIDIA toolkit's exact-version dependencies require).
    state: present | latest | absent (purge=True also removes config files).
    held: True = apt-mark hold, False = unhold, None = leave as it is.
    depends_on: what provides the packages (shown when a candidate is unknown).
    """
    return AptPackages(_as_mapping(names), state=state, held=held, purge=purge,
                       install_recommends=install_recommends, lock_timeout=lock_timeout,
                       depends_on=depends_on)


# ---------------------------------------------------------------- apt-get update


class AptUpdate(Op):
    label = "apt cache"

    def __init__(self, cache_valid_time: int = 3600, lock_timeout: int = LOCK_TIMEOUT) -> None:
        self.cache_valid_time = cache_valid_time
        self.lock_timeout = lock_timeout

    def facts(self) -> Sequence[Fact[Any]]:
        return [AptCacheAge()]

    def plan(self, facts: FactView) -> list[Change]:
        age: int | None = facts[AptCacheAge()]
        if age is not None and age <= self.cache_valid_time:
            return []
        why = "never updated" if age is None else f"{age}s old > {self.cache_valid_time}s"
        return [Change(resource="apt cache", action="update", summary=f"apt-get update ({why})",
                       steps=[Step(apt_get("update", lock_timeout=self.lock_timeout))],
                       invalidates=_APT_INVALIDATES)]


def apt_update(cache_valid_time: int = 3600, lock_timeout: int = LOCK_TIMEOUT) -> AptUpdate:
    """`apt-get update` when the last successful one is older than cache_valid_time s."""
    return AptUpdate(cache_valid_time, lock_timeout)


# ---------------------------------------------------------------- repositories

_ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(key: str | bytes) -> bytes:
    """ASCII-armored OpenPGP key(s) -> binary keyring, on the controller
    (what `gpg --dearmor` does), so targets need no gpg. Binary keys pass
    through. Raises ValueError on a truncated or corrupted armor."""
    if isinstance(key, bytes):
        if _ARMOR_BEGIN.encode() not in key:
            return key
        key = key.decode("ascii")
    if _ARMOR_BEGIN not in key:
        raise ValueError("key is neither binary nor an ASCII-armored public key block")
    out = b""
    for block in key.split(_ARMOR_BEGIN)[1:]:
        if _ARMOR_END not in block:
            raise ValueError("armored key has no END line (truncated?)")
        lines = [ln.strip() for ln in block.split(_ARMOR_END)[0].strip().splitlines()]
        # Armor headers ("Comment: ...") end at the first blank line, if any.
        if "" in lines and any(":" in ln for ln in lines[:lines.index("")]):
            lines = lines[lines.index("") + 1:]
        body = [ln for ln in lines if ln]
        checksum = None
        if body and body[-1].startswith("=") and len(body[-1]) == 5:
            checksum = body.pop()
        data = base64.b64decode("".join(body), validate=True)
        if checksum is not None and _crc24(data).to_bytes(3, "big") != base64.b64decode(
                checksum[1:]):
            raise ValueError("armored key checksum mismatch (corrupted key text)")
        out += data
    return out


class AptRepository(Op):
    def __init__(self, name: str, url: str, suite: str, components: Sequence[str] = (), *,
                 key: str | bytes | None = None, keyring: str | None = None,
                 format: str = "list", arch: str | None = None,
                 lock_timeout: int = LOCK_TIMEOUT, state: str = "present") -> None:
        if format not in ("list", "deb822"):
            raise ValueError(f"apt repository {name}: format must be list|deb822")
        flat = suite.endswith("/")
        if flat and components:
            raise ValueError(f"apt repository {name}: a flat suite ({suite}) takes no components")
        if not flat and not components:
            raise ValueError(f"apt repository {name}: components are required for suite {suite}")
        self.name = name
        self.url = url
        self.suite = suite
        self.components = tuple(components)
        self.key = dearmor(key) if key is not None else None
        self.keyring = keyring or (f"/usr/share/keyrings/{name}.gpg" if key is not None else None)
        self.format = format
        self.arch = arch
        self.lock_timeout = lock_timeout
        self.state = state
        ext = "list" if format == "list" else "sources"
        self.path = f"/etc/apt/sources.list.d/{name}.{ext}"
        # The same name in the other format would make apt read the repo twice.
        self.other_path = f"/etc/apt/sources.list.d/{name}.{'sources' if ext == 'list' else 'list'}"
        self.label = f"apt repository {name}"

    def content(self) -> str:
        head = "# Managed by gpuprov: local edits are overwritten.\n"
        if self.format == "list":
            opts = []
            if self.arch:
                opts.append(f"arch={self.arch}")
            if self.keyring:
                opts.append(f"signed-by={self.keyring}")
            options = f"[{' '.join(opts)}] " if opts else ""
            return head + f"deb {options}{self.url} {' '.join((self.suite, *self.components))}\n"
        lines = ["Types: deb", f"URIs: {self.url}", f"Suites: {self.suite}"]
        if self.components:
            lines.append(f"Components: {' '.join(self.components)}")
        if self.arch:
            lines.append(f"Architectures: {self.arch}")
        if self.keyring:
            lines.append(f"Signed-By: {self.keyring}")
        return head + "\n".join(lines) + "\n"

    def facts(self) -> Sequence[Fact[Any]]:
        wanted: list[Fact[Any]] = [AptSources()]
        if self.keyring and self.key is not None:
            wanted.append(AptKeyring(self.keyring))
        return wanted

    def update_step(self) -> Step:
        # Refresh this source only: seconds instead of a full update, and a
        # broken unrelated repo on the host cannot fail this change.
        return Step(apt_get("update", "-o", f"Dir::Etc::sourcelist={self.path}",
                            "-o", "Dir::Etc::sourceparts=-", "-o", "APT::Get::List-Cleanup=0",
                            lock_timeout=self.lock_timeout))

    def plan(self, facts: FactView) -> list[Change]:
        sources: dict[str, str] = facts[AptSources()]
        if self.state == "absent":
            return [Change(resource=f"apt source {p}", action="delete", summary=f"remove {p}",
                           steps=[remove_file_step(p)], diff=Diff(p, sources[p], None),
                           invalidates=(AptSources, *_APT_INVALIDATES))
                    for p in (self.path, self.other_path) if p in sources]
        changes: list[Change] = []
        if self.keyring and self.key is not None:
            want = hashlib.sha256(self.key).hexdigest()
            have = facts[AptKeyring(self.keyring)]
            if have != want:
                changes.append(Change(
                    resource=f"apt keyring {self.keyring}",
                    action="create" if have is None else "update",
                    summary=(f"write {self.keyring} (dearmored, sha256 {want[:12]}"
                             + (f", was {have[:12]})" if have else ")")),
                    steps=[write_file_step(self.keyring, self.key)],
                    invalidates=(AptKeyring, *_APT_INVALIDATES)))
        content = self.content()
        current = sources.get(self.path)
        stale_other = self.other_path in sources
        if current != content or stale_other:
            steps = [write_file_step(self.path, content.encode())] if current != content else []
            note = ""
            if stale_other:
                steps.append(remove_file_step(self.other_path))
                note = f" and remove {self.other_path}"
            changes.append(Change(
                resource=f"apt source {self.path}",
                action="create" if current is None else "update",
                summary=f"{'write' if current != content else 'keep'} {self.path}{note}",
                steps=steps,
                diff=Diff(self.path, current, content),
                invalidates=(AptSources, *_APT_INVALIDATES)))
        if changes:
            # The refresh rides on the op's last change: one update per repo.
            changes[-1].steps.append(self.update_step())
            changes[-1].summary += f", then apt-get update for {self.name}"
        return changes


def apt_repository(name: str, url: str, suite: str, components: Sequence[str] = (), *,
                   key: str | bytes | None = None, keyring: str | None = None,
                   format: str = "list", arch: str | None = None,
                   lock_timeout: int = LOCK_TIMEOUT, state: str = "present") -> AptRepository:
    """An apt source in /etc/apt/sources.list.d/<name>.list (or .sources with
    format="deb822"), `signed-by` its own keyring.

    key: the ASCII-armored (or binary) public key; dearmored here and written
    to keyring (default /usr/share/keyrings/<name>.gpg). Without key, an
    existing keyring path (e.g. from cuda-keyring) may be given to sign by.
    suite ending in "/" is a flat repository (no components), e.g. the
    NVIDIA Container Toolkit's `https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /`.
    A change refreshes this repository's lists right away.
    """
    return AptRepository(name, url, suite, components, key=key, keyring=keyring, format=format,
                         arch=arch, lock_timeout=lock_timeout, state=state)


# ---------------------------------------------------------------- pins


class AptPin(Op):
    def __init__(self, name: str, package: str, pin: str, priority: int,
                 state: str = "present") -> None:
        self.path = f"/etc/apt/preferences.d/{name}"
        self.text = f"Package: {package}\nPin: {pin}\nPin-Priority: {priority}\n"
        self.state = state
        self.label = f"apt pin {self.path}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [AptPreferences()]

    def plan(self, facts: FactView) -> list[Change]:
        current = facts[AptPreferences()].get(self.path)
        invalidates = (AptPreferences, AptCandidates)
        if self.state == "absent":
            if current is None:
                return []
            return [Change(self.label, "delete", f"remove {self.path}",
                           [remove_file_step(self.path)], Diff(self.path, current, None),
                           invalidates=invalidates)]
        if current == self.text:
            return []
        return [Change(self.label, "create" if current is None else "update",
                       f"write {self.path}", [write_file_step(self.path, self.text.encode())],
                       Diff(self.path, current, self.text), invalidates=invalidates)]


def apt_pin(name: str, package: str, pin: str, priority: int = 1001,
            state: str = "present") -> AptPin:
    """/etc/apt/preferences.d/<name>: e.g. apt_pin("nvidia-580", "nvidia-*",
    "version 580.*", 1001) keeps apt on branch 580 (apt_preferences(5))."""
    return AptPin(name, package, pin, priority, state)
