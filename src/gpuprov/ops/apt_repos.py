"""apt repositories: a source with its signing key (dearmored on the
controller, so targets need no gpg), and pins (apt_preferences) on them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import KW_ONLY, field
from typing import Any, cast

from gpuprov.facts.apt import AptCandidates, AptKeyring, AptPreferences, AptSources
from gpuprov.facts.base import Fact, FactView
from gpuprov.ops.apt_commands import LOCK_TIMEOUT, NET_TIMEOUT, apt_step
from gpuprov.ops.apt_packages import APT_CACHE_FACTS
from gpuprov.ops.atomic import remove_file_step, write_file_step
from gpuprov.ops.base import Change, Diff, Op, Step, operation
from gpuprov.ops.keys import SigningKey
from gpuprov.ops.openpgp import dearmor


@operation
class AptRepository(Op):
    """An apt source in /etc/apt/sources.list.d/<name>.list (or .sources with
    format="deb822"), `signed-by` its own keyring.

    key: the ASCII-armored (or binary) public key, or a SigningKey read only
    when planning; dearmored here and written to keyring (default
    /usr/share/keyrings/<name>.gpg). Without key, an existing keyring path
    (e.g. from cuda-keyring) may be given to sign by.
    suite ending in "/" is a flat repository (no components), e.g. the
    NVIDIA Container Toolkit's `https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /`.
    A change refreshes this repository's lists right away.
    state: present | absent (removes the source file in either format).
    """

    name: str
    url: str
    suite: str
    components: Sequence[str] = ()
    _: KW_ONLY
    key: str | bytes | SigningKey | None = None
    keyring: str | None = None
    format: str = "list"
    arch: str | None = None
    lock_timeout: int = LOCK_TIMEOUT
    net_timeout: int = NET_TIMEOUT
    state: str = "present"
    path: str = field(init=False)
    #: the same source in the other format, removed: apt would read the repo twice
    other_path: str = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        name, suite = self.name, self.suite
        if self.format not in ("list", "deb822"):
            raise ValueError(f"apt repository {name}: format must be list|deb822")
        flat = suite.endswith("/")
        if flat and self.components:
            raise ValueError(f"apt repository {name}: a flat suite ({suite}) takes no components")
        if not flat and not self.components:
            raise ValueError(f"apt repository {name}: components are required for suite {suite}")
        self.components = tuple(self.components)
        if isinstance(self.key, (str, bytes)):
            self.key = dearmor(self.key)
        if self.key is not None:
            self.keyring = self.keyring or f"/usr/share/keyrings/{name}.gpg"
        ext = "list" if self.format == "list" else "sources"
        self.path = f"/etc/apt/sources.list.d/{name}.{ext}"
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

    def key_bytes(self) -> bytes | None:
        """The dearmored key; a SigningKey is read now (SigningKeyError when it
        cannot be, or is no OpenPGP key)."""
        if not isinstance(self.key, SigningKey):
            return cast("bytes | None", self.key)   # __post_init__ dearmored text
        try:
            return dearmor(self.key.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.key.unusable(f"is not an OpenPGP public key: {exc}") from exc

    def update_step(self) -> Step:
        # Refresh this source only: seconds instead of a full update, and a
        # broken unrelated repo on the host cannot fail this change.
        return apt_step("update", "-o", f"Dir::Etc::sourcelist={self.path}",
                        "-o", "Dir::Etc::sourceparts=-", "-o", "APT::Get::List-Cleanup=0",
                        lock_timeout=self.lock_timeout, net_timeout=self.net_timeout)

    def plan(self, facts: FactView) -> list[Change]:
        sources: dict[str, str] = facts[AptSources()]
        if self.state == "absent":
            return [Change(resource=f"apt source {p}", action="delete", summary=f"remove {p}",
                           steps=[remove_file_step(p)], diff=Diff(p, sources[p], None),
                           invalidates=(AptSources, *APT_CACHE_FACTS))
                    for p in (self.path, self.other_path) if p in sources]
        changes: list[Change] = []
        key = self.key_bytes()
        if self.keyring and key is not None:
            want = hashlib.sha256(key).hexdigest()
            have = facts[AptKeyring(self.keyring)]
            if have != want:
                changes.append(Change(
                    resource=f"apt keyring {self.keyring}",
                    action="create" if have is None else "update",
                    summary=(f"write {self.keyring} (dearmored, sha256 {want[:12]}"
                             + (f", was {have[:12]})" if have else ")")),
                    steps=[write_file_step(self.keyring, key)],
                    invalidates=(AptKeyring, *APT_CACHE_FACTS)))
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
                invalidates=(AptSources, *APT_CACHE_FACTS)))
        if changes:
            # The refresh rides on the op's last change: one update per repo.
            changes[-1].steps.append(self.update_step())
            changes[-1].summary += f", then apt-get update for {self.name}"
        return changes


# ---------------------------------------------------------------- pins


@operation
class AptPin(Op):
    """/etc/apt/preferences.d/<name>: e.g. AptPin("nvidia-580", "nvidia-*",
    "version 580.*", 1001) keeps apt on branch 580 (apt_preferences(5))."""

    name: str
    package: str
    pin: str
    priority: int = 1001
    state: str = "present"
    path: str = field(init=False)
    text: str = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.path = f"/etc/apt/preferences.d/{self.name}"
        self.text = f"Package: {self.package}\nPin: {self.pin}\nPin-Priority: {self.priority}\n"
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
