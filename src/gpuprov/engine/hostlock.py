"""One run per host at a time: a lock on the host, held for a host's whole run.

The lock is flock(1) on a file under /run/gpuprov, taken by a shell that then
waits on its stdin (`cat`): the connector keeps that stdin open (Connector.hold)
until the run of the host ends. When the run ends, the channel or the
connection closes, or the controller is killed, the shell's stdin ends and the
kernel drops the flock; a lock is never released by guessing that its holder
is dead.

apply takes it exclusive; drift-check, apply --check and verify take it shared,
so two of them never block each other while an apply excludes both. Whoever
holds it writes one line into the file (command, USER@CONTROLLER, start time,
pid), which is what a run that finds the host busy reports. That line is the
one thing check mode writes on a host, and it lives in /run (a tmpfs, gone at
boot).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import socket
import time
from dataclasses import dataclass

from gpuprov.command import Command, Raw
from gpuprov.connectors.base import Connector, Held
from gpuprov.errors import GpuprovError

LOCK_PATH = "/run/gpuprov/run.lock"
#: overrides LOCK_PATH (tests: a temp dir); "{host}" in it becomes the inventory host's name,
#: since the hosts of a unit test are all this one machine
LOCK_PATH_ENV = "GPUPROV_LOCK_PATH"
EXCLUSIVE, SHARED = "-x", "-s"
#: commands that change nothing take the lock shared
SHARED_COMMANDS = frozenset({"check", "drift-check", "verify"})
#: the lock script's exit code when the lock stayed taken (EX_TEMPFAIL)
BUSY_EXIT = 75
#: beyond --lock-timeout, how long the host may take to answer (sudo, a slow login)
ANSWER_GRACE = 30.0

# $1 the lock file, $2 -x or -s, $3 seconds to wait, $4 the line to write,
# $5 the bytes of a script on stdin to run once the lock is held (0: none),
# $6 the line that ends its output. fd 9 is inherited by `cat`, which holds
# the lock until its stdin ends; head -c reads exactly the script's bytes.
# Before `cat`, a line with a byte count N may come, then N bytes of a last
# script (release(last)): run, under the lock and silently, only when all N
# arrived, so a connection lost mid-way never runs half a script.
_SCRIPT = (
    'command -v flock >/dev/null 2>&1 || { echo "error: flock (util-linux) is not installed"; '
    "exit 1; }; "
    'mkdir -p -m 0755 "${1%/*}" && exec 9>>"$1" || { echo "error: cannot open $1"; exit 1; }; '
    'if [ "$3" = 0 ]; then flock -n "$2" 9; else flock -w "$3" "$2" 9; fi || '
    f'{{ printf "busy %s\\n" "$(head -n 1 "$1")"; exit {BUSY_EXIT}; }}; '
    "printf '%s\\n' \"$4\" >\"$1\"; echo locked; "
    'if [ "$5" -gt 0 ]; then head -c "$5" | sh -s 9>&-; printf \'%s %s\\n\' "$6" "$?"; fi; '
    'if IFS= read -r n && [ "$n" -gt 0 ] 2>/dev/null; then f=$(mktemp) && '
    'head -c "$n" >"$f" && [ "$(wc -c <"$f")" -eq "$n" ] && sh "$f" </dev/null >/dev/null '
    '2>&1 9>&-; rm -f "$f"; fi; '
    "exec cat >/dev/null"
)
#: how long the script run with the lock (the first facts batch) may take
SCRIPT_TIMEOUT = 600.0


class HostBusy(GpuprovError):
    """Another run holds the host's lock."""


@dataclass(frozen=True)
class LockInfo:
    """Who holds a host's lock: the line written into the lock file."""

    command: str
    who: str
    since: float
    pid: int

    @classmethod
    def mine(cls, command: str) -> LockInfo:
        return cls(command, f"{getpass.getuser()}@{socket.gethostname()}", int(time.time()),
                   os.getpid())

    def line(self) -> str:
        return (f"command={self.command} who={self.who} since={int(self.since)} "
                f"pid={self.pid}")

    @classmethod
    def parse(cls, line: str) -> LockInfo | None:
        """The holder named by a lock file's line; None for anything else."""
        fields = dict(part.partition("=")[::2] for part in line.split())
        try:
            return cls(fields["command"], fields["who"], float(fields["since"]),
                       int(fields["pid"]))
        except (KeyError, ValueError):
            return None


def default_lock_path() -> str:
    return os.environ.get(LOCK_PATH_ENV) or LOCK_PATH


def lock_mode(command: str) -> str:
    """`command` may name what started it first ("pull:apply": gpuprov pull's apply)."""
    return SHARED if command.rsplit(":", 1)[-1] in SHARED_COMMANDS else EXCLUSIVE


def lock_command(info: LockInfo, wait: float, path: str = LOCK_PATH, script_bytes: int = 0,
                 end: str = "") -> Command:
    """The command that takes the lock, says "locked", runs the `script_bytes`
    of script it is fed (their output ends with a line `end` EXIT), then holds
    the lock until stdin ends."""
    return Command(Raw("sh -c"), _SCRIPT, "gpuprov-lock", path, Raw(lock_mode(info.command)),
                   f"{wait:g}", info.line(), str(script_bytes), end)


def busy_reason(holder_line: str) -> str:
    """What a run that finds the host locked reports, from the holder's line."""
    info = LockInfo.parse(holder_line)
    if info is None:
        # a holder that has not written its line yet, or a file not written by us
        return "busy: another gpuprov run holds the host's lock"
    since = time.strftime("%H:%M", time.localtime(info.since))
    what = info.command.replace(":", " ")
    return f"busy: {what} by {info.who} since {since} (pid {info.pid})"


class HostLock:
    """Takes one host's run lock and holds it until release()."""

    def __init__(self, connector: Connector, command: str, wait: float = 0.0,
                 path: str = LOCK_PATH) -> None:
        self.connector = connector
        self.info = LockInfo.mine(command)
        self.wait = max(0.0, wait)
        self.path = path.replace("{host}", connector.host_name)
        self._held: Held | None = None
        #: what the script given to acquire() printed, and its exit code
        self.output = ""
        self.exit_code: int | None = None

    def acquire(self, script: str = "") -> bool:
        """Take the lock, waiting up to `wait` seconds, then run `script` (sh, as
        root) in the same round trip; its output is then in `output`. False
        when the connector cannot hold one (a unit test's fake); HostBusy when
        another run holds it."""
        body = script.encode()
        end = "@@gpuprov-lock-script-end-" + secrets.token_hex(8)
        command = lock_command(self.info, self.wait, self.path, len(body), end)
        try:
            held = self.connector.hold(command, sudo=True, stdin=body)
        except NotImplementedError:
            return False
        try:
            answer = held.next_line(self.wait + ANSWER_GRACE)
        except TimeoutError as exc:
            held.release()
            raise GpuprovError(f"{self.connector.host_name}: no answer while taking the run "
                               f"lock {self.path}: {exc}") from exc
        except BaseException:
            held.release()
            raise
        if answer == "locked":
            self._held = held
            if body:
                self._read_output(held, end)
            return True
        held.release()
        if answer.startswith("busy"):
            reason = busy_reason(answer[len("busy"):].strip())
            raise HostBusy(f"{reason}; waited {self.wait:g}s",
                           hint="wait for it to finish, or rerun with --lock-timeout SECONDS")
        raise GpuprovError(f"{self.connector.host_name}: could not take the run lock "
                           f"{self.path}: {answer or '(no output)'}")

    def _read_output(self, held: Held, end: str) -> None:
        try:
            self.output, code = held.read_until(end + " ", SCRIPT_TIMEOUT)
        except (TimeoutError, ValueError) as exc:
            self.release()
            raise GpuprovError(f"{self.connector.host_name}: the facts read with the run "
                               f"lock did not finish: {exc}") from exc
        self.exit_code = int(code) if code.strip().isdigit() else -1

    def release(self, last: str = "") -> None:
        """Let the lock go; `last` (sh, as root) runs on the host first, under
        the lock, in no round trip of its own: nothing waits for it or reads
        its output (the last-apply record)."""
        held, self._held = self._held, None
        if held is None:
            return
        if last:
            body = last.encode()
            with contextlib.suppress(NotImplementedError):
                held.send(f"{len(body)}\n".encode() + body)
        held.release()
