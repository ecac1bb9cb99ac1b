"""Lockout-safe sshd changes.

A wrong sshd config on a remote machine costs a trip to the console, so a
change to sshd's files never goes live on trust:

1. preflight (on the controller, before anything is touched): the operator's
   user, key type and known host key must all still work with the new
   settings, else the task fails naming the setting and nothing changes;
2. the files about to change are saved on the host with a restore script,
   and an automatic revert is armed (systemd-run timer, or a detached
   `sleep && restore` where there is no systemd) BEFORE the first write, so a
   run killed at any later point still ends with the old config back;
3. the new files are written (each atomically), the whole config is checked
   with `sshd -t`, sshd is reloaded (not restarted);
4. a brand-new SSH connection with the operator's key, plus sudo over it,
   proves that logging in still works;
5. only then the revert is cancelled. Any failure restores the saved files
   and reloads sshd (the change's rollback), and the host fails with the
   reason; if even the rollback cannot connect, the armed revert restores
   the host by itself.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpuprov.command import Command
from gpuprov.connectors.base import Session
from gpuprov.errors import GpuprovError
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.files import FileState
from gpuprov.facts.sshd import MODULI_MIN_BITS, ROLLBACK_DIR, SshdInfo, SshdState, UserGroups
from gpuprov.ops.base import Change, Op, Step
from gpuprov.ops.files import plan_write

REVERT_UNIT = "gpuprov-sshd-revert"
MODULI = "/etc/ssh/moduli"

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


# ---------------------------------------------------------------------------
# the host-side scripts

def _cancel_timer() -> str:
    return (f'[ -f "$d/timer.pid" ] && kill -- "-$(cat "$d/timer.pid")" 2>/dev/null\n'
            f"[ -d /run/systemd/system ] && systemctl stop {REVERT_UNIT}.timer 2>/dev/null\n")


def restore_script(saved: Sequence[str], reload: Command) -> str:
    """Put the saved files back, reload sshd, remove the save. Idempotent:
    whoever renames the save directory first (timer, rollback or the
    confirmed run's cleanup) is the only one that acts on it."""
    puts = "".join(f"put {i} {Command(path).shell()}\n" for i, path in enumerate(saved))
    return (
        "#!/bin/sh\n"
        "# gpuprov: sshd files as they were before the last change, and how to put them back.\n"
        f"d={ROLLBACK_DIR}\n"
        'if [ "$1" != --from-timer ]; then\n' + _cancel_timer() + "fi\n"
        '[ -d "$d" ] || exit 0\n'
        'rm -rf "$d.restoring"\n'
        'mv "$d" "$d.restoring" 2>/dev/null || exit 0\n'
        'r="$d.restoring"\n'
        'put() { if [ -e "$r/$1.absent" ]; then rm -f "$2"; '
        'else cp -p "$r/$1" "$2.gpuprov-restore" && mv -f "$2.gpuprov-restore" "$2"; fi; }\n'
        + puts + f"{reload.shell()}\n"
        'rm -rf "$r"\n'
        'command -v logger >/dev/null && logger -t gpuprov "sshd: previous config restored"\n'
        "exit 0\n")


def prepare_script(saved: Sequence[str], restore: str, revert_after: int) -> str:
    """Save the files about to change and arm the automatic revert."""
    saves = "".join(
        f'if [ -e {Command(p).shell()} ]; then cp -p {Command(p).shell()} "$n/{i}"; '
        f'else : > "$n/{i}.absent"; fi\n' for i, p in enumerate(saved))
    # e.g. sshd_config.d on images whose sshd_config had no Include yet
    parents = sorted({posixpath.dirname(p) for p in saved})
    dirs = "".join(f"mkdir -p -m 0755 {Command(d).shell()}\n" for d in parents)
    return (
        "set -e\n"
        f"d={ROLLBACK_DIR}\n"
        'rm -rf "$d.done"\n'
        "# a restore that was itself interrupted: finish it below\n"
        'if [ -f "$d.restoring/restore" ] && [ ! -d "$d" ]; then mv "$d.restoring" "$d"; fi\n'
        'rm -rf "$d.restoring"\n'
        'if [ -d "$d" ]; then\n'
        '  if { [ -f "$d/timer.pid" ] && kill -0 "$(cat "$d/timer.pid")" 2>/dev/null; } || '
        f"{{ [ -d /run/systemd/system ] && systemctl -q is-active {REVERT_UNIT}.timer; }}; then\n"
        "    echo 'gpuprov: an earlier sshd change is still waiting for its automatic revert; "
        "rerun when it has run' >&2; exit 1\n"
        "  fi\n"
        "  # an earlier change was interrupted and its revert never ran (reboot): undo it first\n"
        '  sh "$d/restore"\n'
        "fi\n"
        'n="$d.new"; rm -rf "$n"; mkdir -p -m 0700 "$n"\n'
        + saves + dirs +
        'cat > "$n/restore" <<\'GPUPROV_RESTORE\'\n' + restore + "GPUPROV_RESTORE\n"
        'mv "$n" "$d"\n'
        "if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then\n"
        f"  systemctl reset-failed {REVERT_UNIT}.timer {REVERT_UNIT}.service 2>/dev/null || true\n"
        f"  systemd-run --quiet --unit={REVERT_UNIT} --on-active={revert_after} "
        '/bin/sh "$d/restore" --from-timer\n'
        "else\n"
        f"  setsid sh -c 'sleep {revert_after}; exec sh \"$0\"/restore --from-timer' \"$d\" "
        "</dev/null >/dev/null 2>&1 &\n"
        '  echo $! > "$d/timer.pid"\n'
        "fi\n")


def finish_script() -> str:
    """After the confirmed login: keep the new config (cancel the revert)."""
    return (f"d={ROLLBACK_DIR}\n"
            'mv "$d" "$d.done" 2>/dev/null || { echo "gpuprov: the automatic revert already ran '
            '(confirming took longer than sshd_revert_after); the old config is back" >&2; '
            "exit 1; }\n"
            'd="$d.done"\n' + _cancel_timer() + 'rm -rf "$d"\n')


# ---------------------------------------------------------------------------
# the operation

@dataclass(frozen=True)
class SshdFile:
    path: str
    content: bytes
    mode: str = "0644"


class SshdConfig(Op):
    """sshd's files, host keys and moduli as wanted, changed the lockout-safe way."""

    def __init__(self, files: Sequence[SshdFile], settings: Mapping[str, str], *,
                 session: Session, reload: Command, revert_after: int = 120,
                 preflight: bool = True, ed25519_host_key: bool = True,
                 rsa_host_key_bits: int = 0, strong_moduli: bool = True) -> None:
        self.files = list(files)
        self.settings = dict(settings)
        self.session = session
        self.reload = reload
        self.revert_after = int(revert_after)
        self.preflight = preflight
        self.ed25519_host_key = ed25519_host_key
        self.rsa_host_key_bits = int(rsa_host_key_bits)
        self.strong_moduli = strong_moduli
        self.label = "sshd config (lockout-safe)"

    def _groups_fact(self) -> UserGroups | None:
        if self.session.auth is None or _words(self.settings, "AllowGroups") is None:
            return None
        return UserGroups(self.session.user)

    def facts(self) -> Sequence[Fact[Any]]:
        facts: list[Fact[Any]] = [FileState(f.path, sudo=True) for f in self.files]
        facts.append(SshdState())
        if (groups := self._groups_fact()) is not None:
            facts.append(groups)
        return facts

    def plan(self, facts: FactView) -> list[Change]:
        info: SshdInfo = facts[SshdState()]
        changes: list[Change] = []
        saved: list[str] = []
        for f in self.files:
            found = plan_write(f.path, facts[FileState(f.path, sudo=True)], f.content,
                               owner="root", group="root", mode=f.mode)
            if found:
                changes += found
                saved.append(f.path)
        regenerated: set[str] = set()
        if self.ed25519_host_key and "ed25519" not in info.host_keys:
            changes.append(self._host_key_change("ed25519", None))
            saved += _key_files("ed25519")
            regenerated.add("ed25519")   # new: no known_hosts can trust it yet
        rsa = info.host_keys.get("rsa")
        if self.rsa_host_key_bits and (rsa is None or rsa.bits < self.rsa_host_key_bits):
            changes.append(self._host_key_change("rsa", rsa.bits if rsa else None))
            saved += _key_files("rsa")
            regenerated.add("rsa")
        if self.strong_moduli and info.weak_moduli:
            changes.append(Change(
                f"file {MODULI}", "update",
                f"remove {info.weak_moduli} group-exchange moduli under {MODULI_MIN_BITS} bits",
                steps=[Step(Command.script(
                    f"awk '$1 ~ /^#/ || NF < 7 || $5 >= {MODULI_MIN_BITS}' {MODULI} "
                    f"> {MODULI}.gpuprov-new && chmod 0644 {MODULI}.gpuprov-new && "
                    f"mv -f {MODULI}.gpuprov-new {MODULI}"))],
                invalidates=(SshdState,)))
            saved.append(MODULI)
        if not changes:
            return []
        if self.preflight:
            groups = facts[g] if (g := self._groups_fact()) is not None else None
            risks = lockout_risks(self.settings, self.session, groups, regenerated)
            if risks:
                raise SshdLockout(
                    f"refusing to change sshd: the new settings would lock out {self.session.user}"
                    " (the user gpuprov connects as); nothing was changed:\n  - "
                    + "\n  - ".join(risks),
                    hint="fix the variables named above (see roles/sshd_hardening/defaults.yml)")
        return self._transaction(changes, saved, info)

    def _host_key_change(self, kind: str, bits: int | None) -> Change:
        key = f"/etc/ssh/ssh_host_{kind}_key"
        size = ["-b", str(self.rsa_host_key_bits)] if kind == "rsa" else []
        new = f"{key}.gpuprov-new"
        steps = [Step(Command.join([
            Command("rm", "-f", new, f"{new}.pub"),
            Command("ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-C", "", "-f", new),
            Command("mv", "-f", f"{new}.pub", f"{key}.pub"),
            Command("mv", "-f", new, key)]))]
        if bits is None:
            return Change(f"host key {kind}", "create", f"generate the {kind} host key",
                          steps=steps, invalidates=(SshdState,))
        return Change(f"host key {kind}", "update",
                      f"regenerate the {kind} host key ({bits} -> {self.rsa_host_key_bits} "
                      "bits; its fingerprint changes)", steps=steps, invalidates=(SshdState,))

    def _transaction(self, changes: list[Change], saved: list[str], info: SshdInfo) -> list[Change]:
        restore = restore_script(saved, self.reload)
        rollback = [Step(Command.script(f"[ ! -f {ROLLBACK_DIR}/restore ] || "
                                        f"sh {ROLLBACK_DIR}/restore"))]
        arm = Step(Command.script(prepare_script(saved, restore, self.revert_after)))
        changes[0].steps.insert(0, arm)
        for change in changes:
            change.rollback = rollback
        note = (" (an earlier interrupted change is rolled back first)"
                if info.rollback_pending else "")
        changes.append(Change(
            "service sshd", "reload",
            f"check the whole config (sshd -t), reload sshd, confirm a NEW login + sudo, then "
            f"cancel the automatic revert (armed: {self.revert_after}s){note}",
            steps=[Step(Command.script("mkdir -p /run/sshd && chmod 0755 /run/sshd && "
                                       "$(command -v sshd || echo /usr/sbin/sshd) -t")),
                   Step(self.reload),
                   Step(Command("true"), new_connection=True),
                   Step(Command.script(finish_script()))],
            rollback=rollback,
            invalidates=(SshdState, *(FileState.at(p) for p in saved))))
        return changes


def _key_files(kind: str) -> list[str]:
    key = f"/etc/ssh/ssh_host_{kind}_key"
    return [key, f"{key}.pub"]


def include_first(text: str, include: str) -> str:
    """sshd_config with `include` as its first directive: OpenSSH keeps the
    FIRST value it reads, so a drop-in only wins if it is read before the
    main file's own settings. Later copies of the same Include are dropped
    (HostKey lines add up, so reading a drop-in twice is not harmless)."""
    lines = text.splitlines(keepends=True)
    same = [ln.split() == include.split() for ln in lines]
    first = next((i for i, ln in enumerate(lines)
                  if ln.strip() and not ln.lstrip().startswith("#")), None)
    if first is not None and same[first]:
        return "".join(ln for i, ln in enumerate(lines) if i <= first or not same[i])
    kept = [ln for ln, dup in zip(lines, same, strict=True) if not dup]
    head = 0
    while head < len(kept) and (not kept[head].strip() or kept[head].lstrip().startswith("#")):
        head += 1
    return "".join(kept[:head] + [include + "\n"] + kept[head:])
