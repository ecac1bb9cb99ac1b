"""The lockout preflight of sshd_hardening: before anything is touched, on the
controller, the operator's user, key type and known host key must all still
work with the new settings, else the task fails naming the setting and
nothing changes. (The armed revert, ops/armed.py, catches what a preflight
cannot see.)"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from gpuprov.connectors.base import Session
from gpuprov.errors import GpuprovError

#: signature algorithms a client key type authenticates with
_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


class SshdLockout(GpuprovError):
    """The new sshd settings would lock the operator out: nothing was changed."""


def _value_raw(settings: Mapping[str, str], keyword: str) -> str | None:
    """A keyword's value as written (sshd keywords are case-insensitive)."""
    for key, value in settings.items():
        if key.lower() == keyword.lower():
            return str(value)
    return None


def _words(settings: Mapping[str, str], keyword: str) -> list[str] | None:
    raw = _value_raw(settings, keyword)
    return None if raw is None else raw.replace(",", " ").split()


def _value(settings: Mapping[str, str], keyword: str) -> str | None:
    words = _words(settings, keyword)
    return " ".join(words) if words is not None else None


def _matches(patterns: Sequence[str], name: str) -> bool:
    # USER@HOST patterns: only the user part can be checked from here.
    return any(fnmatch.fnmatchcase(name, p.partition("@")[0]) for p in patterns)


def needs_groups(settings: Mapping[str, str], session: Session) -> bool:
    """Whether the preflight needs the operator's groups on the host (AllowGroups,
    with an SSH login at stake)."""
    return session.auth is not None and _words(settings, "AllowGroups") is not None


def host_key_kept(known: str, host_key_algorithms: Sequence[str], regenerated: set[str]) -> bool:
    """Whether a host key type the operator's known_hosts trusts is still offered, unchanged."""
    if known == "ssh-rsa":
        return "rsa" not in regenerated and any(a.startswith("rsa-sha2-")
                                                for a in host_key_algorithms)
    if known == "ssh-ed25519":
        return "ed25519" not in regenerated and "ssh-ed25519" in host_key_algorithms
    return known in host_key_algorithms


def lockout_risks(settings: Mapping[str, str], session: Session,
                  groups: Sequence[str] | None = None,
                  regenerated_host_keys: set[str] | None = None) -> list[str]:
    """Why these sshd settings would lock out the operator of `session`; [] if they would not.

    Each reason names the setting and what to do instead.
    """
    if session.auth is None:   # local connector: no SSH login at stake
        return []
    risks: list[str] = []
    user = session.user
    # Lists of methods are separated by spaces; a comma chains methods that
    # must ALL succeed, which a run logging in by one method cannot do.
    methods = (_value_raw(settings, "AuthenticationMethods") or "any").split()
    if not any(m == "any" or m == session.auth for m in methods):
        risks.append(f"AuthenticationMethods {' '.join(methods)}: you log in by "
                     f"{session.auth} alone" + ("; install your SSH key for "
                                                 f"{user} first" if session.auth != "publickey"
                                                 else ""))
    if session.auth == "publickey" and (_value(settings, "PubkeyAuthentication") or
                                        "yes").lower() == "no":
        risks.append("PubkeyAuthentication no: you log in with a key")
    root_login = (_value(settings, "PermitRootLogin") or "prohibit-password").lower()
    if user == "root" and root_login in ("no", "forced-commands-only"):
        risks.append(f"PermitRootLogin {root_login}: you connect as root; connect as a sudo "
                     "user, or set sshd_permit_root_login: prohibit-password")
    allow_users = _words(settings, "AllowUsers")
    if allow_users is not None and not _matches(allow_users, user):
        risks.append(f"AllowUsers {' '.join(allow_users)}: does not allow {user}, the user "
                     "gpuprov connects as; add it to ssh_allow_users")
    deny_users = _words(settings, "DenyUsers")
    if deny_users and _matches(deny_users, user):
        risks.append(f"DenyUsers {' '.join(deny_users)}: denies {user}, the user gpuprov "
                     "connects as")
    allow_groups = _words(settings, "AllowGroups")
    if allow_groups is not None:
        if groups is None:
            risks.append(f"AllowGroups {' '.join(allow_groups)}: cannot tell the groups of "
                         f"{user} on the host")
        elif not any(_matches(allow_groups, g) for g in groups):
            risks.append(f"AllowGroups {' '.join(allow_groups)}: {user} is in none of them "
                         f"(groups: {' '.join(groups) or 'none'})")
    if session.key_type is not None:
        accepted = _words(settings, "PubkeyAcceptedAlgorithms")
        needed = _KEY_ALGORITHMS.get(session.key_type, (session.key_type,))
        if accepted is not None and not set(needed) & set(accepted):
            risks.append(f"PubkeyAcceptedAlgorithms: your key is {session.key_type}, which it "
                         f"does not accept ({' or '.join(needed)} missing); use an ed25519 key "
                         "or add the algorithm")
        min_rsa = _value(settings, "RequiredRSASize")
        if (session.key_type == "ssh-rsa" and min_rsa and session.key_bits
                and session.key_bits < int(min_rsa)):
            risks.append(f"RequiredRSASize {min_rsa}: your RSA key has {session.key_bits} bits; "
                         "use an ed25519 key (or a larger RSA key) first")
    if session.known_host_key_types:
        offered = _words(settings, "HostKeyAlgorithms") or ["ssh-ed25519", "rsa-sha2-512",
                                                            "rsa-sha2-256"]
        regenerated = regenerated_host_keys or set()
        if not any(host_key_kept(k, offered, regenerated) for k in session.known_host_key_types):
            known = ", ".join(session.known_host_key_types)
            risks.append(f"host keys: your known_hosts trusts this host by {known}, which the "
                         "new config no longer offers unchanged; record its ed25519 key first "
                         "(ssh-keyscan -t ed25519 HOST >> known_hosts, checked with the host's "
                         "admin)")
    return risks
