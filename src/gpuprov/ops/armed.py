"""Changes that could cut the controller off from a host (sshd's config, a
firewall, the network), applied so that a mistake costs minutes, not a trip
to the console:

1. the files about to change are saved on the host with a restore script,
   and an automatic revert is armed (a systemd-run timer, or a detached
   `sleep && restore` where there is no systemd) BEFORE the first write, so a
   run killed at any later point still ends with the old files back;
2. the changes run, each with its own steps;
3. the new state is checked and made live (e.g. `sshd -t`, then a reload);
4. a brand-new connection, plus sudo over it, proves that logging in still
   works;
5. only then the revert is cancelled. Any failure restores the saved files
   and makes them live again (every change's rollback), and the host fails
   with the reason; if even the rollback cannot connect, the armed revert
   restores the host by itself.

A change still saved when the next run begins belongs to a run that ended
before confirming it (every apply holds the host's run lock, engine/hostlock.py):
that run undoes it first (prepare_script), or, when the files are already as
wanted, finishes it (confirm_pending) rather than leave its revert to undo it
after reporting the host in sync.

A reboot before the confirmation kills the armed timer, so a boot hook is
installed with the save and removed with it (confirmed, rolled back or
restored): a systemd unit wanted by multi-user.target, or an init.d script
with rc links, that restores the saved files before the services named in
`boot_before` start, then removes itself. A restore that cannot put a file
back keeps the save (and the hook), so the next boot or run tries again.

An op plans its Changes as usual and hands them to ArmedRevert.transaction()
with the paths they touch. What is specific to the thing changed (sshd's
syntax check, its reload, a preflight) stays with the op that uses this.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gpuprov.command import Command
from gpuprov.facts.base import Selector
from gpuprov.facts.files import FileState
from gpuprov.ops.base import Change, Step

_WORD = re.compile(r"[A-Za-z0-9_.@-]+")
#: the save directory goes unquoted into a systemd unit's ExecStart: plain characters only
_PATH = re.compile(r"/[A-Za-z0-9_.@/-]+")
SYSTEMD_DIR = "/etc/systemd/system"
INIT_D = "/etc/init.d"
#: sysvinit runlevels a boot hook starts in (Debian's multi-user ones)
RUNLEVELS = ("2", "3", "4", "5")


def _q(word: str) -> str:
    return Command(word).shell()


@dataclass(frozen=True)
class ArmedRevert:
    """The automatic revert of one kind of change on a host."""

    #: what is changed, in messages and the host's log: "sshd"
    what: str
    #: where the saved files and the restore script stay until the change is confirmed
    directory: str
    #: the systemd unit (and timer) name of the revert: "gpuprov-sshd-revert"
    unit: str
    #: makes the files live, the restored ones too (e.g. reload sshd)
    activate: Command
    #: seconds after which the host reverts by itself unless the change was confirmed
    revert_after: int = 120
    #: what sets revert_after, named when the revert ran before the confirmation
    #: (e.g. a role variable); None: the number of seconds
    revert_after_setting: str | None = None
    #: services that read the files: at boot the hook restores them before these start
    #: (init script / systemd unit names without .service: "ssh", "sshd")
    boot_before: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # `what`, `unit` and `boot_before` go into messages and unit files as they are
        for name in ("what", "unit"):
            if not _WORD.fullmatch(getattr(self, name)):
                raise ValueError(f"ArmedRevert.{name} must be a plain word, got "
                                 f"{getattr(self, name)!r}")
        for service in self.boot_before:
            if not _WORD.fullmatch(service):
                raise ValueError(f"ArmedRevert.boot_before must be plain words, got {service!r}")
        if (not _PATH.fullmatch(self.directory)
                or posixpath.normpath(self.directory) in ("/", "//")):
            raise ValueError(f"ArmedRevert.directory must be an absolute path below / of "
                             f"letters, digits and _.@-, got {self.directory!r}")

    # -- the boot hook ---------------------------------------------------------------

    @property
    def boot_name(self) -> str:
        """The boot hook's unit / init script name: "gpuprov-sshd-revert-boot"."""
        return f"{self.unit}-boot"

    def boot_hook_paths(self) -> list[str]:
        """Every file of the boot hook on either init system, links first (so
        removing them in this order never leaves a link to nothing)."""
        unit = f"{self.boot_name}.service"
        return [f"{SYSTEMD_DIR}/multi-user.target.wants/{unit}", f"{SYSTEMD_DIR}/{unit}",
                *(f"/etc/rc{level}.d/S00{self.boot_name}" for level in RUNLEVELS),
                f"{INIT_D}/{self.boot_name}"]

    def _remove_boot_hook(self) -> str:
        return "rm -f " + " ".join(self.boot_hook_paths()) + "\n"

    def boot_commands(self) -> list[str]:
        """What the hook runs at boot, one complete command a line: the save's
        restore (finishing an interrupted one first), or, with no save left,
        removing the hook."""
        return [f"d={self.directory}",
                'if [ ! -d "$d" ] && [ -f "$d.restoring/restore" ]; then '
                'mv "$d.restoring" "$d"; fi',
                'if [ -f "$d/restore" ]; then exec /bin/sh "$d/restore" --at-boot; fi',
                self._remove_boot_hook().strip()]

    def boot_unit(self) -> str:
        """The systemd unit of the boot hook (enabled by its wants link: no
        daemon call needed, systemd reads it at the next boot)."""
        # systemd expands $VAR in ExecStart: $$ is a literal $; no quote or backslash inside
        body = "; ".join(self.boot_commands()).replace("$", "$$")
        before = "".join(f" {s}.service" for s in self.boot_before)
        return ("[Unit]\n"
                f"Description=gpuprov: restore the {self.what} files saved before an "
                "unconfirmed change\n"
                f"Before=multi-user.target{before}\n"
                "\n[Service]\nType=oneshot\n"
                f"ExecStart=/bin/sh -c '{body}'\n"
                "\n[Install]\nWantedBy=multi-user.target\n")

    def boot_init_script(self) -> str:
        """The sysvinit init script of the boot hook (started by its S00 rc links)."""
        before = " ".join(self.boot_before)
        return ("#!/bin/sh\n"
                "### BEGIN INIT INFO\n"
                f"# Provides:          {self.boot_name}\n"
                "# Required-Start:    $local_fs\n"
                "# Required-Stop:\n"
                f"# X-Start-Before:    {before}\n"
                f"# Default-Start:     {' '.join(RUNLEVELS)}\n"
                "# Default-Stop:\n"
                f"# Short-Description: gpuprov: restore {self.what} files saved before an "
                "unconfirmed change\n"
                "### END INIT INFO\n"
                '[ "$1" = start ] || exit 0\n' + "\n".join(self.boot_commands()) + "\n")

    def _install_boot_hook(self) -> str:
        """Shell (under set -e) that installs the hook for this host's init system;
        each file is written beside its place and renamed, so it is whole or absent."""
        name, unit = self.boot_name, f"{self.boot_name}.service"
        links = "".join(f"  [ ! -d /etc/rc{level}.d ] || "
                        f"ln -sfn ../init.d/{name} /etc/rc{level}.d/S00{name}\n"
                        for level in RUNLEVELS)
        return (
            "if [ -d /run/systemd/system ]; then\n"
            f"  mkdir -p {SYSTEMD_DIR}/multi-user.target.wants\n"
            f"  cat > {SYSTEMD_DIR}/.gpuprov-{unit} <<'GPUPROV_BOOT'\n" + self.boot_unit()
            + "GPUPROV_BOOT\n"
            f"  mv -f {SYSTEMD_DIR}/.gpuprov-{unit} {SYSTEMD_DIR}/{unit}\n"
            f"  ln -sfn {SYSTEMD_DIR}/{unit} {SYSTEMD_DIR}/multi-user.target.wants/{unit}\n"
            f"elif [ -d {INIT_D} ]; then\n"
            f"  cat > {INIT_D}/.gpuprov-{name} <<'GPUPROV_BOOT'\n" + self.boot_init_script()
            + "GPUPROV_BOOT\n"
            f"  chmod 0755 {INIT_D}/.gpuprov-{name}\n"
            f"  mv -f {INIT_D}/.gpuprov-{name} {INIT_D}/{name}\n"
            + links + "fi\n")

    def restore_script(self, saved: Sequence[str]) -> str:
        """Put the saved files back, make them live, remove the save and the boot
        hook. Idempotent: whoever renames the save directory first (timer,
        rollback, boot hook or the confirmed run's cleanup) is the only one that
        acts on it. A file that cannot be put back keeps the whole save (and
        the hook) for the next boot or run, and the script exits 1.
        --from-timer: run by the armed timer (it does not cancel itself);
        --at-boot: run by the boot hook (no timer survived the reboot, and the
        services start later with the restored files: nothing to make live)."""
        puts = "".join(f"put {i} {_q(path)}\n" for i, path in enumerate(saved))
        return (
            "#!/bin/sh\n"
            f"# gpuprov: {self.what} files as they were before the last change, and how to "
            "put them back.\n"
            f"d={_q(self.directory)}\n"
            'if [ "$1" != --from-timer ] && [ "$1" != --at-boot ]; then\n'
            + self._cancel_timer() + "fi\n"
            '[ -d "$d" ] || exit 0\n'
            'rm -rf "$d.restoring"\n'
            'mv "$d" "$d.restoring" 2>/dev/null || exit 0\n'
            'r="$d.restoring"\n'
            # after a reboot the pid names no timer of ours: never signal it later
            '[ "$1" != --at-boot ] || rm -f "$r/timer.pid"\n'
            "failed=\n"
            'put() { if [ -e "$r/$1.absent" ]; then rm -f "$2" || failed="$failed $2"; '
            'elif cp -p "$r/$1" "$2.gpuprov-restore" && mv -f "$2.gpuprov-restore" "$2"; then :; '
            'else rm -f "$2.gpuprov-restore"; failed="$failed $2"; fi; }\n'
            + puts +
            # the live files are now a mix: making them live could break what still works
            'if [ -n "$failed" ]; then\n'
            '  mv "$r" "$d"\n'
            f'  m="gpuprov: {self.what}: could not put back$failed; the saved files stay in '
            '$d for the next boot or run"\n'
            '  echo "$m" >&2\n'
            '  command -v logger >/dev/null && logger -t gpuprov "$m"\n'
            "  exit 1\n"
            "fi\n"
            'if [ "$1" != --at-boot ]; then\n'
            f"{self.activate.shell()}\n"
            "fi\n"
            'rm -rf "$r"\n'
            + self._remove_boot_hook() +
            "command -v logger >/dev/null && "
            f'logger -t gpuprov "{self.what}: previous config restored"\n'
            "exit 0\n")

    def prepare_script(self, saved: Sequence[str]) -> str:
        """Save the files about to change and arm the automatic revert."""
        saves = "".join(
            f'if [ -e {_q(p)} ]; then cp -p {_q(p)} "$n/{i}"; '
            f'else : > "$n/{i}.absent"; fi\n' for i, p in enumerate(saved))
        # e.g. sshd_config.d on images whose sshd_config had no Include yet
        parents = sorted({posixpath.dirname(p) for p in saved})
        dirs = "".join(f"mkdir -p -m 0755 {_q(d)}\n" for d in parents)
        unit, after = _q(self.unit), self.revert_after
        return (
            "set -e\n"
            f"d={_q(self.directory)}\n"
            'rm -rf "$d.done"\n'
            "# An earlier change never confirmed: its run ended first (killed, cut off) or\n"
            "# a reboot stopped its timer. Every apply holds the host's run lock for its\n"
            "# whole run, so no live run owns it: undo it now, as its timer would (the\n"
            "# restore stops the timer first).\n"
            'if [ -d "$d" ]; then sh "$d/restore"; fi\n'
            "# A restore that was itself interrupted (a reboot, or the timer stopped just\n"
            "# above while it restored): finish it.\n"
            'if [ -f "$d.restoring/restore" ] && [ ! -d "$d" ]; then\n'
            '  mv "$d.restoring" "$d"; sh "$d/restore"\n'
            "fi\n"
            'rm -rf "$d.restoring"\n'
            'n="$d.new"; rm -rf "$n"; mkdir -p -m 0700 "$n"\n'
            + saves + dirs +
            'cat > "$n/restore" <<\'GPUPROV_RESTORE\'\n' + self.restore_script(saved)
            + "GPUPROV_RESTORE\n"
            # the hook first: without a save it only removes itself, while a save
            # without its hook would wait for the next run after a reboot
            + self._install_boot_hook() +
            'mv "$n" "$d"\n'
            "if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then\n"
            f"  systemctl reset-failed {unit}.timer {unit}.service 2>/dev/null || true\n"
            # AccuracySec: systemd fires a timer up to 1 min late by default
            # (seen on the systemd fleet: 15 s armed, restored after 40 s)
            f"  systemd-run --quiet --unit={unit} --on-active={after} "
            "--timer-property=AccuracySec=1s "
            '/bin/sh "$d/restore" --from-timer\n'
            "else\n"
            f"  setsid sh -c 'sleep {after}; exec sh \"$0\"/restore --from-timer' \"$d\" "
            "</dev/null >/dev/null 2>&1 &\n"
            '  echo $! > "$d/timer.pid"\n'
            "fi\n")

    def finish_script(self) -> str:
        """After the confirmed login: keep the new files (cancel the revert)."""
        took = self.revert_after_setting or f"{self.revert_after}s"
        return (f"d={_q(self.directory)}\n"
                'mv "$d" "$d.done" 2>/dev/null || { echo "gpuprov: the automatic revert already '
                f'ran (confirming took longer than {took}, or the host rebooted); the old '
                'config is back" >&2; '
                "exit 1; }\n"
                'd="$d.done"\n' + self._cancel_timer() + self._remove_boot_hook()
                + 'rm -rf "$d"\n')

    def rollback(self) -> list[Step]:
        """Run the saved restore script, if there is one (a change's rollback)."""
        restore = f"{_q(self.directory)}/restore"
        return [Step(Command.script(f"[ ! -f {restore} ] || sh {restore}"))]

    def transaction(self, changes: list[Change], saved: Sequence[str], *, resource: str,
                    action: str, doing: str, checks: Sequence[Step] = (),
                    pending: bool = False, invalidates: Sequence[Selector] = ()
                    ) -> list[Change]:
        """`changes` (planned by the caller, touching the files `saved`) as one
        armed transaction: the first change arms the revert before its own
        steps, every change rolls back by the restore, and a last Change
        (`resource`, `action`) runs `checks`, makes the files live, confirms a
        new login + sudo and cancels the revert. `doing` says what the checks
        and activation do ("reload sshd"); `pending`: an earlier change's save
        is still on the host (the arming step restores it first)."""
        if not changes:
            return []
        rollback = self.rollback()
        changes[0].steps.insert(0, Step(Command.script(self.prepare_script(saved))))
        for change in changes:
            change.rollback = rollback
        note = " (an earlier interrupted change is rolled back first)" if pending else ""
        changes.append(self._confirmation(
            resource, action, f"{doing}, confirm a NEW login + sudo, then cancel the automatic "
            f"revert (armed: {self.revert_after}s){note}", checks,
            (*invalidates, *(FileState.at(p) for p in saved))))
        return changes

    def confirm_pending(self, *, resource: str, action: str, doing: str,
                        checks: Sequence[Step] = (), invalidates: Sequence[Selector] = ()
                        ) -> list[Change]:
        """With every file already as wanted but an earlier change's save still
        on the host: that change was made, then its run ended before confirming
        it (a killed controller), and its armed revert would undo it minutes
        after this run reported the host in sync. Finish that change instead:
        check, make live, confirm a new login + sudo, cancel the revert."""
        return [self._confirmation(
            resource, action, f"an earlier {self.what} change was never confirmed (its run "
            f"ended first): {doing}, confirm a NEW login + sudo, then cancel its automatic "
            "revert", checks, tuple(invalidates))]

    def _confirmation(self, resource: str, action: str, summary: str, checks: Sequence[Step],
                      invalidates: tuple[Selector, ...]) -> Change:
        return Change(
            resource, action, summary,
            steps=[*checks, Step(self.activate),
                   # sudo (the Step default) over the new login: proves root still works
                   Step(Command("true"), new_connection=True),
                   Step(Command.script(self.finish_script()))],
            rollback=self.rollback(), invalidates=invalidates)

    def _cancel_timer(self) -> str:
        return (f'[ -f "$d/timer.pid" ] && kill -- "-$(cat "$d/timer.pid")" 2>/dev/null\n'
                f"[ -d /run/systemd/system ] && systemctl stop {_q(self.unit)}.timer "
                "2>/dev/null\n")
