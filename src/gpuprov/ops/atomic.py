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
from gpuprov.ops.base import Explain, Explained, Failure, Step

__all__ = [
    "as_user", "not_symlink", "received_intact", "remove_file_step", "safe_dirs_check",
    "temp_file_filled", "temp_file_installed", "write_command", "write_failure",
    "write_file_step", "write_step",
]

#: what the tools print (strerror) when the filesystem refuses a write -> its errno name
_WRITE_ERRORS = {"No space left on device": "ENOSPC", "Disk quota exceeded": "EDQUOT",
                 "Read-only file system": "EROFS", "File too large": "EFBIG"}


def _q(text: str) -> str:
    """Quoted by command.py, for a fragment glued to shell syntax."""
    return Command(text).shell()


def safe_dirs_check(path: str) -> Command:
    """Shell that exits 1 with the reason when someone other than root and
    the user running it (root under sudo; see as_user()) could change a
    directory that leads to `path`: owns it, or may write to it (group/other
    write bit).

    Such a person could swap a directory for a symlink between our steps and
    send a root write, chown or chmod to any file. Checked on the host, in the
    same step as the write: every directory of the path as written (a symlink
    there must be owned by root or the runner) and of the path it resolves to.
    A sticky directory (/tmp) is accepted above the parent, where nobody can
    rename root's entries, but not as the parent: there anyone may plant the
    target's name in advance.
    """
    parent = posixpath.dirname(posixpath.normpath(path)) or "/"
    literal, d = [parent], parent
    while d != "/":
        d = posixpath.dirname(d)
        literal.insert(0, d)
    why = f"gpuprov: refusing to write {path}"
    hint = "make it root-owned and writable only by root"
    return Command(Raw(
        "{ gp_u=$(id -u) && gp_p=$(readlink -m -- " + _q(parent) + ") || exit 1; "
        'gp_bad() { echo "' + why.replace('"', "") + ': $1 $2; a user could redirect the '
        'write to another file (' + hint + ')" >&2; exit 1; }; '
        'gp_chk() { [ -e "$1" ] || [ -L "$1" ] || return 0; '
        's=$(stat -c "%u %a" -- "$1") || exit 1; u=${s% *}; m=${s#* }; '
        '[ "$u" -eq 0 ] || [ "$u" -eq "$gp_u" ] || gp_bad "$1" "is owned by uid $u"; '
        '[ -L "$1" ] && return 0; '
        '[ $((0$m & 022)) -eq 0 ] || { [ $((0$m & 01000)) -ne 0 ] && [ "$1" != "$2" ]; } '
        '|| gp_bad "$1" "is writable by others (mode $m)"; }; '
        "for d in " + " ".join(_q(x) for x in literal) + '; do gp_chk "$d" '
        + _q(parent) + "; done; "
        'r=$gp_p; while :; do gp_chk "$r" "$gp_p"; [ "$r" = / ] && break; '
        'r=$(dirname -- "$r"); done; }'))


def not_symlink(path: str) -> Command:
    """Shell test that fails, saying why, when `path` is a symlink: chmod has
    no -h on Linux and would change the symlink's target."""
    msg = f"gpuprov: {path} is a symlink; refusing to change its owner or mode"
    return Command(Raw("{ [ ! -L " + _q(path) + " ] || { echo " + _q(msg)
                       + " >&2; false; }; }"))


def as_user(cmd: Command, user: str | None) -> Command:
    """`cmd` run by `user` (runuser, from root) instead of root; as it is when None.

    For files in a directory a user owns (~/.ssh): written with that user's
    rights, a symlink the user planted can only lead where the user could
    write anyway."""
    if user is None:
        return cmd
    return Command("runuser", "-u", user, "--", "sh", "-c", cmd.shell())


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
    failure; finish with temp_file_installed(). Refused first when the
    directories leading to `path` are not root's (or the runner's): see
    safe_dirs_check()."""
    tmp = posixpath.join(posixpath.dirname(path), ".gpuprov-XXXXXX")
    # The temp name starts with '.' and has no extension, so drop-in readers
    # (sshd *.conf, sudoers.d skips names with '.', apt *.list) never load it.
    return [
        *safe_dirs_check(path).parts, Raw("&&"),
        # EXIT removes the temp on any failure; the signal trap turns a
        # dropped connection (SIGHUP, or SIGPIPE when a message is written to
        # the closed stderr) or Ctrl-C into an exit that runs it: a shell
        # killed by a signal skips its EXIT trap. Both are set first, and the
        # temp's name is in $t BEFORE the file exists (mktemp -u, then an
        # O_EXCL create, 0600, in a subshell): a signal at any point removes
        # it. (`t=$(mktemp)` left it behind when the signal came between the
        # create and the assignment.) Only root or the runner can write in
        # the directory (safe_dirs_check), so nobody can take the name between.
        Raw("t= && trap 'rm -f \"$t\"' EXIT"), Raw("&&"), Raw("trap 'exit 143' HUP INT TERM PIPE"),
        Raw("&&"), Raw(f"t=$(mktemp -u {_q(tmp)})"), Raw("&&"),
        Raw('(umask 077 && set -C && : >"$t")'),
        Raw("&&"), *fill, Raw("&&"),
        # chown before chmod: chown clears setuid/setgid bits
        # -h: never through a symlink, even one swapped in for the temp
        "chown", "-h", f"{owner}:{group}", Raw('"$t" &&'), "chmod", mode, Raw('"$t"'),
    ]


def temp_file_installed(path: str) -> list[Any]:
    """Shell parts: the temp file `$t` renamed over `path` (atomic)."""
    # -T: never move INTO a directory (or a symlink to one) at the target path
    return [Raw("&&"), "mv", "-fT", Raw('"$t"'), path, Raw("&& trap - EXIT")]


def write_command(path: str, content: bytes, owner: str, group: str, mode: str, *,
                  validate: str | None = None, backup: bool = False,
                  secret: bool = False, user: str | None = None) -> Command:
    """The step that atomically replaces `path` with its stdin (which must be
    `content`); run by `user` instead of root when given (see as_user())."""
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
    return as_user(Command(*parts, *temp_file_installed(path)), user)


def write_failure(path: str) -> Explain:
    """explain() for a write of `path`: a filesystem that refused it (full, over
    quota, read-only) named with its errno, and what the failure left behind
    (nothing: the temp file is removed, the target untouched)."""

    def explain(failure: Failure) -> Explained | None:
        text = f"{failure.stderr}\n{failure.stdout}"
        for message, errno_name in _WRITE_ERRORS.items():
            if message in text:
                directory = posixpath.dirname(path) or "/"
                return Explained(
                    f"{message.lower()} ({errno_name}) writing {path}; {path} was left "
                    "unchanged and no temp file remains",
                    f"free space on the filesystem of {directory} (`df -h {directory}` on the "
                    "host), then run again" if errno_name in ("ENOSPC", "EDQUOT", "EFBIG")
                    else f"{directory} is on a read-only filesystem: remount it read-write")
        return None

    return explain


def write_step(path: str, command: Command, data: bytes) -> Step:
    """A Step running a write_command() of `path` with `data` on its stdin."""
    return Step(command, stdin=data, explain=write_failure(path))


def write_file_step(path: str, data: bytes, mode: str = "0644") -> Step:
    """One root step writing `data` (fed on stdin) to a root-owned `path`,
    creating its directory: write_command's atomic, verified write."""
    directory = posixpath.dirname(path)
    cmd = Command.join([Command("mkdir", "-p", directory),
                        write_command(path, data, "root", "root", mode)])
    return write_step(path, cmd, data)


def remove_file_step(path: str) -> Step:
    """One root step removing `path` if it is there (unlink: atomic, no temp needed)."""
    return Step(Command("rm", "-f", path))
