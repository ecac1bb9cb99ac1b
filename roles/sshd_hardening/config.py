"""sshd's files, host keys and moduli as wanted, changed the lockout-safe way:

1. the preflight (lockout.py) refuses settings that would lock the operator
   out, before anything is touched;
2. the changes run as one armed transaction (gpuprov.ops.armed): the files
   about to change are saved and an automatic revert armed first; after the
   writes the whole config is checked with `sshd -t`, sshd is reloaded (not
   restarted), and a brand-new login + sudo must work before the revert is
   cancelled. Any failure puts the saved files back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from gpuprov.command import Command
from gpuprov.connectors.base import Session
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.files import FileState
from gpuprov.facts.sshd import SshdConfigFiles, SshdEffective, SshdInfo, SshdState, UserGroups
from gpuprov.ops.armed import ArmedRevert
from gpuprov.ops.atomic import write_command, write_step
from gpuprov.ops.base import Change, Diff, Op, Step, operation
from gpuprov.ops.file_plan import plan_write

from .conflicts import Conflict, Login, commented, conflicts, mismatches, read_order
from .lockout import SshdLockout, lockout_risks, needs_groups

REVERT_UNIT = "gpuprov-sshd-revert"
#: sshd's service on Debian/Ubuntu and on RHEL: a reboot restores the saved files before it
SSHD_SERVICES = ("ssh", "sshd")
#: where an armed sshd change keeps the files it replaced until confirmed
ROLLBACK_DIR = "/var/lib/gpuprov/sshd-rollback"
MODULI = "/etc/ssh/moduli"
#: ssh-audit's guides: group-exchange moduli below this many bits are weak
MODULI_MIN_BITS = 3071
#: what a change to sshd's files makes stale, besides the files themselves
SSHD_FACTS = (SshdState, SshdConfigFiles, SshdEffective)
CONFLICT_CHOICES = ("fail", "comment")
#: what checks sshd's whole config before the reload (sshd needs /run/sshd for -t)
SSHD_CHECK = Command.script("mkdir -p /run/sshd && chmod 0755 /run/sshd && "
                            "$(command -v sshd || echo /usr/sbin/sshd) -t")


@dataclass(frozen=True)
class SshdFile:
    path: str
    content: bytes
    mode: str = "0644"


def sshd_state() -> SshdState:
    """The sshd probe, with this role's policy: its moduli threshold and the
    directory its armed changes save to (read at call time: tests move it)."""
    return SshdState(MODULI_MIN_BITS, ROLLBACK_DIR)


def armed_revert(reload: Command, revert_after: int = 120) -> ArmedRevert:
    """How an sshd change is reverted on the host (the SshdState probe reports
    a save left in ROLLBACK_DIR)."""
    return ArmedRevert("sshd", ROLLBACK_DIR, REVERT_UNIT, reload, revert_after,
                       revert_after_setting="sshd_revert_after", boot_before=SSHD_SERVICES)


@operation
class SshdConfig(Op):
    """sshd's files, host keys and moduli as wanted, changed the lockout-safe way.

    files[0] is the drop-in that holds `settings`; a line elsewhere that wins
    over one of them (read first, or a Match block for the operator's login)
    is a conflict: with conflicts="fail" a blocked change naming its
    file:line, with "comment" that line commented out (backup beside it) in
    the same armed transaction. With the files as wanted, `sshd -T` for the
    operator's login must show every setting, else the task fails saying so.
    """

    files: Sequence[SshdFile]
    settings: Mapping[str, str]
    _: KW_ONLY
    #: how the operator is logged in: what the preflight keeps working
    session: Session
    reload: Command
    revert_after: int = 120
    preflight: bool = True
    ed25519_host_key: bool = True
    rsa_host_key_bits: int = 0
    strong_moduli: bool = True
    conflicts: str = "fail"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conflicts not in CONFLICT_CHOICES:
            raise ValueError(f"conflicts must be fail or comment, got {self.conflicts!r}")
        self.files = list(self.files)
        self.settings = dict(self.settings)
        self.revert_after = int(self.revert_after)
        self.rsa_host_key_bits = int(self.rsa_host_key_bits)
        self.label = "sshd config (lockout-safe)"

    def _groups_fact(self) -> UserGroups | None:
        if not needs_groups(self.settings, self.session):
            return None
        return UserGroups(self.session.user)

    def facts(self) -> Sequence[Fact[Any]]:
        facts: list[Fact[Any]] = [FileState(f.path, sudo=True) for f in self.files]
        facts += [sshd_state(), SshdConfigFiles(), SshdEffective(self.session.user)]
        if (groups := self._groups_fact()) is not None:
            facts.append(groups)
        return facts

    def plan(self, facts: FactView) -> list[Change]:
        info: SshdInfo = facts[sshd_state()]
        contents = {f.path: f.content for f in self.files}
        found_conflicts = self._conflicts(facts, contents)
        blocked, fixes = self._conflict_changes(facts, found_conflicts, contents)
        changes: list[Change] = []
        saved: list[str] = []
        for f in self.files:
            found = plan_write(f.path, facts[FileState(f.path, sudo=True)], contents[f.path],
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
                invalidates=SSHD_FACTS))
            saved.append(MODULI)
        for change in fixes:
            changes.append(change)
            saved.append(change.resource.removeprefix("file "))
        if not changes and info.rollback_pending and not blocked:
            return armed_revert(self.reload, self.revert_after).confirm_pending(
                resource="service sshd", action="reload", doing="check the whole config "
                "(sshd -t), reload sshd", checks=[Step(SSHD_CHECK)], invalidates=SSHD_FACTS)
        if not changes:
            return blocked or self._not_in_effect(facts)
        if info.rollback_pending:
            # An earlier change never confirmed, and more to do: its restore (the
            # arming step's first act) would undo what this plan found done
            # already. Undo it alone first; the engine then plans this op again.
            undo = Change("service sshd", "restore", "roll back an earlier sshd change that "
                          "was never confirmed (its run ended first), then plan again",
                          steps=armed_revert(self.reload, self.revert_after).rollback(),
                          invalidates=(*SSHD_FACTS, FileState), replan=True)
            return [*blocked, undo]
        if self.preflight:
            groups = facts[g] if (g := self._groups_fact()) is not None else None
            risks = lockout_risks(self.settings, self.session, groups, regenerated)
            if risks:
                raise SshdLockout(
                    f"refusing to change sshd: the new settings would lock out {self.session.user}"
                    " (the user gpuprov connects as); nothing was changed:\n  - "
                    + "\n  - ".join(risks),
                    hint="fix the variables named above (see roles/sshd_hardening/defaults.yml)")
        return blocked + armed_revert(self.reload, self.revert_after).transaction(
            changes, saved, resource="service sshd", action="reload",
            doing="check the whole config (sshd -t), reload sshd", checks=[Step(SSHD_CHECK)],
            pending=info.rollback_pending, invalidates=SSHD_FACTS)

    # -- what else sets gpuprov's keywords ------------------------------------------

    def _conflicts(self, facts: FactView, contents: Mapping[str, bytes]) -> list[Conflict]:
        """The winning lines elsewhere, in the config as it will be once the
        planned files are written (the drop-in may not be there yet)."""
        files = {f.path: list(f.lines) for f in facts[SshdConfigFiles()]}
        files.update({path: data.decode().splitlines() for path, data in contents.items()})
        login = Login.of(self.session.user, facts[SshdEffective(self.session.user)])
        return conflicts(read_order(files, SshdConfigFiles().main), self.settings,
                         self.files[0].path, login)

    def _conflict_changes(self, facts: FactView, found: list[Conflict],
                          contents: dict[str, bytes]) -> tuple[list[Change], list[Change]]:
        """(blocked changes, fixes): with conflicts=fail one blocked change per
        file; with comment the fixes (for a file this op writes anyway, its
        new content gets the lines commented out instead)."""
        dropin = self.files[0].path
        by_file: dict[str, list[Conflict]] = {}
        for c in found:
            by_file.setdefault(c.path, []).append(c)
        if self.conflicts == "fail":
            return [Change(f"file {path}", "update",
                           "; ".join(f"line {c.number}: `{c.text.strip()}` overrides "
                                     f"`{c.keyword} {c.wanted}` of {dropin}" for c in cs),
                           blocked="; ".join(c.describe(dropin) for c in cs)
                           + "; remove the line, or set sshd_conflicts: comment",
                           invalidates=())
                    for path, cs in by_file.items()], []
        files = {f.path: f for f in facts[SshdConfigFiles()]}
        fixes = []
        for path, cs in by_file.items():
            numbers = {c.number for c in cs}
            if path in contents:
                lines = contents[path].decode().splitlines()
                contents[path] = commented(lines, numbers, dropin).encode()
                continue
            cur = files[path]
            new = commented(cur.lines, numbers, dropin)
            data = new.encode()
            fixes.append(Change(
                f"file {path}", "update",
                f"comment out line{'s' if len(cs) > 1 else ''} "
                + ", ".join(str(c.number) for c in cs)
                + f" (overrode {dropin}; backup beside it)",
                steps=[write_step(path, write_command(path, data, cur.owner, cur.group,
                                                      cur.mode, backup=True), data)],
                diff=Diff(path, "\n".join(cur.lines) + "\n", new),
                invalidates=(FileState.at(path), *SSHD_FACTS)))
        return [], fixes

    def _not_in_effect(self, facts: FactView) -> list[Change]:
        """With every file as wanted: what `sshd -T` shows otherwise, which no
        line found explains (a change no apply can make, so a blocked one)."""
        effective = facts[SshdEffective(self.session.user)]
        if effective is None:
            return []
        wrong = mismatches(effective, self.settings)
        if not wrong:
            return []
        what = "; ".join(f"{k} is `{got}`, wanted `{want}`" for k, want, got in wrong)
        return [Change("service sshd", "update", f"not in effect (sshd -T): {what}",
                       blocked=f"sshd -T for {effective.user} from {effective.addr} shows "
                               f"{what}; no line of sshd_config or its Include files was "
                               "found that sets it", invalidates=())]

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
