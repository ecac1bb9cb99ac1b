"""A package repository signed by a key fetched on the controller: an apt
source with its keyring on the Debian family, a dnf repo file with its
RPM-GPG key on the RHEL family.

The key is read when the op plans, not when the role builds it, so an
unreachable key never stops a role: the op plans a change that says it
cannot be done (Change.blocked), and the engine reports it as unknown in
check mode and fails the task in apply. Ops never know the mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, field
from typing import Any

from gpuprov.errors import GpuprovError
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.system import OsInfo
from gpuprov.ops.apt_packages import LOCK_TIMEOUT
from gpuprov.ops.apt_repos import AptRepository
from gpuprov.ops.base import Change, Op, operation
from gpuprov.ops.dnf import DnfRepository
from gpuprov.ops.keys import SigningKey, SigningKeyError
from gpuprov.ops.openpgp import normalize_fingerprint


@operation
class SignedRepository(Op):
    """Repository `name` at `url` for the host's package manager (`os`),
    signed by the key at `key` (a URL, a file on the controller, or the armored
    text), which `variable` set: errors name it.

    insecure: fetch the key over plain http too (default: https only).
    key_fingerprint: the key's OpenPGP v4 primary key fingerprint, checked on
    the controller before the key reaches a host (see repository_key_options).
    what: the repository in messages (default "the repository <url>").
    apt only: suite ("/" for a flat repository), components, keyring, arch,
    lock_timeout (see apt_repos.AptRepository).
    dnf only: description, options (see dnf.DnfRepository).
    """

    os: OsInfo
    name: str
    url: str
    _: KW_ONLY
    key: str
    variable: str
    insecure: bool = False
    key_fingerprint: str = ""
    what: str = ""
    suite: str = "/"
    components: Sequence[str] = ()
    keyring: str | None = None
    arch: str | None = None
    lock_timeout: int = LOCK_TIMEOUT
    description: str | None = None
    options: Mapping[str, str] | None = None
    #: the apt or dnf repository op, holding the key unread
    repository: AptRepository | DnfRepository = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.what = self.what or f"the repository {self.url}"
        if self.key_fingerprint:
            try:
                self.key_fingerprint = normalize_fingerprint(self.key_fingerprint)
            except ValueError as exc:
                raise GpuprovError(f"{self.variable.split('.')[0]}.key_fingerprint: {exc}",
                                   "give the 40 hex digits `gpg --show-keys KEYFILE` prints "
                                   "(spaces allowed), or leave it empty") from None
        key = SigningKey(self.key, self.what, self.variable, self.insecure,
                         self.key_fingerprint)
        if self.os.family == "rhel":
            self.repository = DnfRepository(self.name, self.url, description=self.description,
                                            key=key, options=self.options)
        elif self.os.family == "debian":
            self.repository = AptRepository(self.name, self.url, self.suite, self.components,
                                            key=key, keyring=self.keyring, arch=self.arch,
                                            lock_timeout=self.lock_timeout)
        else:
            raise GpuprovError(f"no package manager known for "
                               f"{self.os.pretty_name or self.os.id!r}",
                               hint="supported: Ubuntu 22.04/24.04, Debian 12, RHEL 9 and rebuilds")
        self.label = self.repository.label

    def facts(self) -> Sequence[Fact[Any]]:
        return self.repository.facts()

    def plan(self, facts: FactView) -> list[Change]:
        try:
            return self.repository.plan(facts)
        except SigningKeyError as exc:
            blocked = Change(f"signing key of {self.what}", "check",
                             f"cannot check signing key of {self.what}", blocked=str(exc))
        if isinstance(self.repository, AptRepository):
            # The source line needs only the keyring's path: still checked.
            # (A dnf repo file without its key would fail gpgcheck.)
            return [blocked, *dataclasses.replace(self.repository, key=None).plan(facts)]
        return [blocked]


#: signed_repository(os, name, url, key=, variable=, ...): see SignedRepository
signed_repository = SignedRepository


def repository_key_options(repo: Mapping[str, Any]) -> dict[str, Any]:
    """`insecure` and `key_fingerprint` for signed_repository from a role's
    repository mapping (`{url, key, insecure, key_fingerprint}`), so every role
    spells them alike. ValueError names the bad field (for ctx.bad_var)."""
    insecure = repo.get("insecure", False)
    if not isinstance(insecure, bool):
        raise ValueError(f"insecure must be true or false, not {insecure!r}")
    fingerprint = str(repo.get("key_fingerprint") or "").strip()
    if fingerprint:
        try:
            fingerprint = normalize_fingerprint(fingerprint)
        except ValueError as exc:
            raise ValueError(f"key_fingerprint: {exc}") from None
    return {"insecure": insecure, "key_fingerprint": fingerprint}
