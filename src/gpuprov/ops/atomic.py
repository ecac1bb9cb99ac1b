"""Atomic file writes and removals on the host, as shell: the one mechanism
every op that changes a file's content goes through.

A write is ONE step whose stdin is the new bytes: it makes a temp file in
the target's own directory, checks that the upload arrived whole, sets owner
and mode on the temp, runs an optional validator on it, keeps an optional
backup, and renames it over the target. A killed or failed run leaves the
old file whole; a rename is atomic only within one filesystem, hence the
temp beside the target. Ops that fill the temp themselves (a token made on
the host) use the temp_file_* halves directly.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

from gpuprov.command import Command, Raw
from gpuprov.ops.base import Step

__all__ = [
    "received_intact", "remove_file_step", "temp_file_filled", "temp_file_installed",
    "write_command", "write_file_step",
]


def _q(text: str) -> str:
    """Quoted by command.py, for a fragment glued to shell syntax."""
    return Command(text).shell()


def received_intact(path_expr: str, data: bytes, secret: bool = False) -> str:
    """Shell test that an uploaded temp file holds exactly `data`.

    A dropped connection ends the remote `cat` with a plain EOF (exit 0,
    no SIGHUP for exec channels), so without this a killed run could rename
    a truncated temp file over the target. A secret's digest would let a
    report reader test guesses offline, so secrets are checked by size only
    (truncation is the failure this guards against).
    """
    if secret:
        test = f'[ "$(wc -c <{path_expr})" -eq {len(data)} ]'
    else:
        test = f'[ "$(sha256sum <{path_expr} | cut -c1-64)" = {hashlib.sha256(data).hexdigest()} ]'
    return (f"{{ {test} || {{ echo 'gpuprov: upload incomplete ({len(data)} bytes expected; "
            "connection lost?), target left unchanged' >&2; exit 1; }; }")


def temp_file_filled(path: str, fill: list[Any], owner: str, group: str,
                     mode: str) -> list[Any]:
    """Shell parts: a temp file `$t` beside `path`, filled by `fill` (which
    must fail on a bad result), then given owner and mode. Removed on any
    failure; finish with temp_file_installed()."""
    tmp = posixpath.join(posixpath.dirname(path), ".gpuprov-XXXXXX")
    # The temp name starts with '.' and has no extension, so drop-in readers
    # (sshd *.conf, sudoers.d skips names with '.', apt *.list) never load it.
    return [
        # EXIT removes the temp on any failure; the signal trap turns a
        # dropped connection (SIGHUP, or SIGPIPE when a message is written to
        # the closed stderr) or Ctrl-C into an exit that runs it: a shell
        # killed by a signal skips its EXIT trap. Both are set before mktemp
        # (t emptied first), so a signal right after mktemp still removes it.
        Raw("t= && trap 'rm -f \"$t\"' EXIT"), Raw("&&"), Raw("trap 'exit 143' HUP INT TERM PIPE"),
        Raw("&&"), Raw(f"t=$(mktemp {_q(tmp)})"),
        Raw("&&"), *fill, Raw("&&"),
        # chown before chmod: chown clears setuid/setgid bits
        "chown", f"{owner}:{group}", Raw('"$t" &&'), "chmod", mode, Raw('"$t"'),
    ]


def temp_file_installed(path: str) -> list[Any]:
    """Shell parts: the temp file `$t` renamed over `path` (atomic)."""
    # -T: never move INTO a directory (or a symlink to one) at the target path
    return [Raw("&&"), "mv", "-fT", Raw('"$t"'), path, Raw("&& trap - EXIT")]


def write_command(path: str, content: bytes, owner: str, group: str, mode: str, *,
                  validate: str | None = None, backup: bool = False,
                  secret: bool = False) -> Command:
    """The step that atomically replaces `path` with its stdin (which must be `content`)."""
    parts = temp_file_filled(path, [Raw('cat >"$t"'), Raw("&&"),
                                    Raw(received_intact('"$t"', content, secret))],
                             owner, group, mode)
    if validate is not None:
        # the validator's stdout joins its stderr, where failures are reported
        # and a failure says which file stayed as it was.
        failed = f"gpuprov: validation failed, {path} left unchanged"
        parts += [Raw("&& { " + validate.replace("{}", '"$t"') + " || {"),
                  Raw("echo " + _q(failed) + " >&2; exit 1; }; } >&2")]
    if backup:
        # Ansible's name: path.PID.YYYY-MM-DD@HH:MM:SS~ (no drop-in suffix, never loaded)
        parts += [Raw("&&"), "cp", "-p", path,
                  Raw(_q(path) + ".$$.$(date +%Y-%m-%d@%H:%M:%S)~")]
    return Command(*parts, *temp_file_installed(path))


def write_file_step(path: str, data: bytes, mode: str = "0644") -> Step:
    """One root step writing `data` (fed on stdin) to a root-owned `path`,
    creating its directory: write_command's atomic, verified write."""
    directory = posixpath.dirname(path)
    cmd = Command.join([Command("mkdir", "-p", directory),
                        write_command(path, data, "root", "root", mode)])
    return Step(cmd, stdin=data)


def remove_file_step(path: str) -> Step:
    """One root step removing `path` if it is there (unlink: atomic, no temp needed)."""
    return Step(Command("rm", "-f", path))
