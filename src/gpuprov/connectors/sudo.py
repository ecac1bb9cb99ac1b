"""Becoming root, shared by the ssh and local connectors.

Both connectors turn a command into one shell line run by a POSIX shell
(`sh -c <cmd>`, or `sudo ... -- sh -c <cmd>`) plus an optional stdin prefix,
then stream stdin after that prefix. This module owns that step so the two
connectors cannot drift apart on how root is gained or how a password is fed.

How root is gained is detected once per host, on the first sudo use:

- already root            -> the command runs as is, no sudo at all;
- `sudo -n true` works    -> `sudo -n -- sh -c '<cmd>'`;
- a become password given -> `sudo -S -k -p '' -- sh -c '<guard>; <cmd>'`,
  with the password line and then a random marker line prepended to stdin
  (the password never on argv, so never in a process list);
- otherwise               -> UnreachableHost(kind "sudo").

The marker: `-k` makes sudo ignore its timestamp, but sudo may still stop
asking mid-run (a role adds a NOPASSWD rule, `Defaults !authenticate`...).
Then the password line would be the first line the command reads, and a
command that runs its stdin (`sh -s`, the facts batch) would run it as root.
So the command as root first reads one line and goes on only if it is this
command's marker: if sudo read the password, that line is the marker; if
sudo did not ask, it is the password, read into a variable, compared and
dropped, never executed. The refused command exits MARKER_EXIT_CODE having
run nothing; `Sudo.run` then probes again (sudo no longer asks) and reruns
it when its stdin can be replayed.

With become disabled, nothing is probed and commands run as the login user.
"""

from __future__ import annotations

import secrets
import shlex
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from gpuprov.command import Command
from gpuprov.connectors.base import Become, Held
from gpuprov.errors import UnreachableHost

# A command that runs longer than its timeout is interrupted and reported as a
# CommandResult with this exit code (coreutils `timeout` uses the same) and a
# note at the end of stderr; it is not an UnreachableHost, the host is fine.
TIMEOUT_EXIT_CODE = 124
TIMEOUT_NOTE = "[gpuprov] command timed out after {:g}s and was interrupted; it may have partly run"

# Big enough to stream multi-GB image tarballs efficiently, small enough to
# keep memory flat.
CHUNK_SIZE = 256 * 1024

StdinSource = bytes | BinaryIO | None
# Runs one shell line with stdin bytes; returns (exit code, stdout, stderr).
RawExec = Callable[[str, bytes], tuple[int, str, str]]
# Runs one shell line with stdin chunks; returns (exit code, stdout, stderr).
Execute = Callable[[str, Iterator[bytes]], tuple[int, str, str]]

# The exit code and note of a command refused because sudo did not read the
# password (see the module docstring); 125 is no common command's own code.
MARKER_EXIT_CODE = 125
MARKER_NOTE = "[gpuprov] sudo did not ask for the password: command refused, nothing run"

# One round trip answers "how do I become root here"; LC_ALL=C keeps sudo's
# messages parseable.
_PROBE = (
    "LC_ALL=C; export LC_ALL; "
    'if [ "$(id -u)" = 0 ]; then echo root; '
    "elif ! command -v sudo >/dev/null 2>&1; then echo nosudo; "
    "elif sudo -n true 2>/dev/null; then echo nopasswd; "
    "else echo password; fi"
)
_VALIDATE = "LC_ALL=C sudo -S -k -p '' true"

# A held command (the run lock) is usually a host's first sudo use: it becomes
# root the way the probe would find, without a round trip of its own, where
# that needs no password. Its first line says how; any other first line (sudo
# wants a password, no sudo) and it ran nothing: the probe runs as usual.
_TAG = "@@gpuprov-sudo "
_TRY_ROOT = (
    f'if [ "$(id -u)" = 0 ]; then echo "{_TAG}root"; exec sh -c "$1"; fi; '
    f'command -v sudo >/dev/null 2>&1 || {{ echo "{_TAG}nosudo"; exit 1; }}; '
    f"exec sudo -n -- sh -c 'echo \"{_TAG}nopasswd\"; exec sh -c \"$1\"' gpuprov-sudo \"$1\""
)
#: how long the host may take to say how it became root
TRY_ROOT_TIMEOUT = 30.0
_WRONG_PASSWORD_MARKERS = ("incorrect password", "Sorry, try again")

ROOT, NOPASSWD, PASSWORD = "root", "nopasswd", "password"


def split_command(command: Command | str) -> tuple[str, str]:
    """(shell text to execute, text to display). Plain strings have no secrets."""
    if isinstance(command, Command):
        return command.shell(), command.display()
    return command, command


def add_note(stderr: str, note: str) -> str:
    """Append a gpuprov note on its own line to a command's stderr."""
    sep = "" if not stderr or stderr.endswith("\n") else "\n"
    return f"{stderr}{sep}{note}\n"


def iter_stdin(stdin: StdinSource, prefix: bytes = b"") -> Iterator[bytes]:
    """Yield the stdin stream in chunks, after `prefix` (the sudo password line)."""
    if prefix:
        yield prefix
    if stdin is None:
        return
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        data = memoryview(stdin)
        for start in range(0, len(data), CHUNK_SIZE):
            yield bytes(data[start:start + CHUNK_SIZE])
        return
    while True:
        chunk = stdin.read(CHUNK_SIZE)
        if not chunk:
            return
        if isinstance(chunk, str):  # a text-mode file slipped through
            chunk = chunk.encode()
        yield chunk


class Sudo:
    """Per-host become logic; `exec_raw` runs the (unprivileged) probe."""

    def __init__(self, host: str, user: str, become: Become, exec_raw: RawExec) -> None:
        self.host = host
        self.user = user
        self.become = become
        self._exec_raw = exec_raw
        self._mode: str | None = None
        self._lock = threading.Lock()

    def run(self, shell: str, sudo: bool, stdin: StdinSource,
            execute: Execute) -> tuple[int, str, str]:
        """Run `shell` through `execute` (the connector's), as root if `sudo`.

        A command refused because sudo stopped asking for the password is
        rerun once in the mode probed anew, from the start of its stdin; a
        stream that cannot be rewound makes it an UnreachableHost instead."""
        start = _stdin_position(stdin)
        line, prefix = self.prepare(shell, sudo)
        code, out, err = execute(line, iter_stdin(stdin, prefix))
        if not sudo:
            return code, out, err
        if prefix and self.refused(code, err):
            with self._lock:
                self._mode = None  # sudo changed its mind: ask it again
            if start is None:
                raise UnreachableHost(
                    self.host, "sudo", f"sudo on {self.user}@{self.host} stopped asking for "
                    "the password mid-run; the command was refused before it ran",
                    hint="rerun: the next run finds out how sudo behaves now")
            if start >= 0:
                cast(BinaryIO, stdin).seek(start)
            line, prefix = self.prepare(shell, sudo)
            code, out, err = execute(line, iter_stdin(stdin, prefix))
        self.check(code, err)
        return code, out, err

    @staticmethod
    def refused(exit_code: int, stderr: str) -> bool:
        """Whether the marker guard refused a command (sudo did not ask)."""
        return exit_code == MARKER_EXIT_CODE and MARKER_NOTE in stderr

    def prepare(self, shell: str, sudo: bool) -> tuple[str, bytes]:
        """The line to hand to a POSIX login shell, and the stdin prefix."""
        if not sudo or not self.become.enabled:
            # become off: the login user is trusted to have the rights it needs,
            # as in Ansible; a permission error then names the command.
            return f"sh -c {shlex.quote(shell)}", b""
        mode = self.mode()
        if mode == ROOT:
            return f"sh -c {shlex.quote(shell)}", b""
        if mode == NOPASSWD:
            return f"sudo -n -- sh -c {shlex.quote(shell)}", b""
        assert self.become.password is not None
        marker = f"gpuprov-marker-{secrets.token_hex(16)}"
        return (f"sudo -S -k -p '' -- sh -c {shlex.quote(_guarded(shell, marker))}",
                self.become.password.encode() + b"\n" + marker.encode() + b"\n")

    def hold(self, shell: str, sudo: bool, stdin: bytes,
             start: Callable[[str, bytes], Held]) -> Held:
        """Start `shell` through `start` (the connector's: line, stdin -> Held),
        as root if `sudo`; the first use of root finds out how as it goes."""
        if sudo and self.become.enabled and self._mode is None:
            held = start(f"sh -c {shlex.quote(_TRY_ROOT)} gpuprov-sudo {shlex.quote(shell)}",
                         stdin)
            try:
                answer = held.next_line(TRY_ROOT_TIMEOUT)
            except BaseException:
                held.release()
                raise
            with self._lock:
                if answer in (_TAG + ROOT, _TAG + NOPASSWD):
                    self._mode = answer[len(_TAG):]
                    return held
            held.release()  # it ran nothing: ask the usual way
        line, prefix = self.prepare(shell, sudo)
        return start(line, prefix + stdin)

    def check(self, exit_code: int, stderr: str) -> None:
        """Turn a password rejected mid-run (changed since validation) into an error."""
        if self._mode == PASSWORD and exit_code == 1 and _wrong_password(stderr):
            raise self._wrong_password()

    def mode(self) -> str:
        # Detected once per host; the lock keeps parallel tasks on one host
        # from probing twice (and from feeding the password twice).
        with self._lock:
            if self._mode is None:
                self._mode = self._detect()
            return self._mode

    def _detect(self) -> str:
        code, out, err = self._exec_raw(f"sh -c {shlex.quote(_PROBE)}", b"")
        answer = out.strip().splitlines()[-1:] or [""]
        mode = answer[0]
        if code != 0 or mode not in (ROOT, NOPASSWD, PASSWORD, "nosudo"):
            raise UnreachableHost(self.host, "sudo", f"could not check how to become root "
                                  f"(exit {code}): {err.strip() or out.strip()}")
        if mode == ROOT:
            return ROOT
        who = f"{self.user}@{self.host}"
        if mode == "nosudo":
            raise UnreachableHost(self.host, "sudo", f"{who} is not root and sudo is not installed",
                                  hint="connect as root, or install and configure sudo")
        if mode == NOPASSWD:
            return NOPASSWD
        if self.become.password is None:
            raise UnreachableHost(self.host, "sudo", f"sudo on {who} needs a password",
                                  hint="rerun with --ask-become-pass (-K), or allow "
                                       "passwordless sudo (NOPASSWD) for this user")
        if "\n" in self.become.password or "\r" in self.become.password:
            # sudo reads one line: the rest would be the command's stdin.
            raise UnreachableHost(self.host, "sudo", f"the sudo password for {who} has a "
                                  "line break, which sudo -S cannot read",
                                  hint="rerun with --ask-become-pass and the right password")
        # Validate once, with nothing after the password line, so a wrong
        # password fails here instead of sudo reading a command's stdin as
        # further password attempts.
        code, _, err = self._exec_raw(_VALIDATE, self.become.password.encode() + b"\n")
        if code == 0:
            return PASSWORD
        if _wrong_password(err):
            raise self._wrong_password()
        raise UnreachableHost(self.host, "sudo", f"sudo failed for {who}: {_last_line(err)}",
                              hint="check the sudoers rules for this user")

    def _wrong_password(self) -> UnreachableHost:
        return UnreachableHost(
            self.host, "sudo", f"wrong sudo password for {self.user}@{self.host}",
            hint="rerun with --ask-become-pass and the right password")


def _guarded(shell: str, marker: str) -> str:
    """`shell` behind the marker guard (module docstring): the first stdin line
    must be `marker`, read with `read -r` (one byte at a time from a pipe, so
    the command's own stdin is untouched) and never executed."""
    refuse = f"{{ echo {shlex.quote(MARKER_NOTE)} >&2; exit {MARKER_EXIT_CODE}; }}"
    return (f"IFS= read -r gpuprov_marker || {refuse}; "
            f'[ "$gpuprov_marker" = {marker} ] || {refuse}; '
            f"unset gpuprov_marker; exec sh -c {shlex.quote(shell)}")


def _stdin_position(stdin: StdinSource) -> int | None:
    """Where a rerun starts reading stdin: -1 for bytes or nothing (replayable
    as is), the offset of a seekable stream, None for a stream read once."""
    if stdin is None or isinstance(stdin, (bytes, bytearray, memoryview)):
        return -1
    try:
        return stdin.tell() if stdin.seekable() else None
    except (OSError, ValueError):
        return None


def _wrong_password(stderr: str) -> bool:
    return any(marker in stderr for marker in _WRONG_PASSWORD_MARKERS)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"
