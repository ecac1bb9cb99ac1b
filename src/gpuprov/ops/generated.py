"""Secrets generated ON the host and never read back: a random token file.

The secret is made by the host's own /dev/urandom and stays there: gpuprov
only ever stats the file (owner, mode, size), so the token is in no fact,
command line, report or diff. Whoever needs it reads it on the host
(`sudo cat FILE`); a service gets it from its start script. Any role that
needs a shared secret (a Jupyter token, an API key for a local service)
uses this op instead of generating one on the controller.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import KW_ONLY
from typing import Any

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.atomic import temp_file_filled, temp_file_installed
from gpuprov.ops.base import Change, Op, Step, operation
from gpuprov.ops.file_plan import (
    FileOpError,
    NoteDiff,
    attr_notes,
    attrs_command,
    check_path,
    file_mode,
)


def generate_command(path: str, nbytes: int, owner: str, group: str, mode: str,
                     newline: bool = True) -> Command:
    """Write `nbytes` random bytes as 2*nbytes lowercase hex (+ newline unless
    `newline` is false) to `path`, atomically: a private temp file beside it,
    checked, renamed."""
    fill = [
        # -v: od would print '*' for a line equal to the one before it
        "od", "-An", "-vtx1", f"-N{nbytes}", "/dev/urandom", Raw("|"), "tr", "-d", " \\n",
        Raw('>"$t" && echo >>"$t" &&' if newline else '>"$t" &&'),
        # grep -x matches the last line without its newline too
        "grep", "-qxE", f"[0-9a-f]{{{2 * nbytes}}}", Raw('"$t"'),
    ]
    # umask first: the directory (when new) and the temp are never readable by others
    return Command(Raw("umask 077 &&"), "mkdir", "-p", posixpath.dirname(path), Raw("&&"),
                   *temp_file_filled(path, fill, owner, group, mode),
                   *temp_file_installed(path))


@operation
class GeneratedSecret(Op):
    """`path` holds a token of `nbytes` random bytes (hex) made on the host,
    with owner/group/mode. A missing or too short file gets a new token; an
    existing one is never read, only its owner and mode are corrected.
    `notify` fires when a new token is written.

    newline false: the file is the hex digits alone, exactly 2*nbytes bytes,
    for a reader that takes the file's whole content as the secret
    (jupyter_server's JUPYTER_TOKEN_FILE does not strip a newline). A file of
    any other size is replaced: the op cannot read it to know what it holds."""

    path: str
    _: KW_ONLY
    nbytes: int = 32
    owner: str = "root"
    group: str = "root"
    mode: str = "0600"
    newline: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nbytes < 16:
            raise ValueError(f"a token needs at least 16 random bytes, got {self.nbytes}")
        self.path = check_path(self.path)
        self.owner, self.group = str(self.owner), str(self.group)
        self.mode = file_mode(self.mode)
        self.label = f"token {self.path}"
        # stat only: the content never leaves the host
        self.fact = FileState(self.path, content=False, sudo=True)

    def facts(self) -> Sequence[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: FactView) -> list[Change]:
        cur: FileInfo | None = facts[self.fact]
        invalidates = (FileState.at(self.path),)
        what = f"{self.nbytes} random bytes as {2 * self.nbytes} hex chars, made on the host"
        if cur is not None and cur.type != "file":
            raise FileOpError(f"{self.path} is a {cur.type}, not a token file",
                              hint="remove it; gpuprov then generates the token there")
        # 2*nbytes hex chars, plus the newline we write (a hand-made file may lack it)
        size = 2 * self.nbytes
        wrong = cur is not None and (cur.size < size or (not self.newline and cur.size != size))
        if cur is None or wrong:
            step = Step(generate_command(self.path, self.nbytes, self.owner, self.group,
                                         self.mode, self.newline))
            if cur is None:
                action, summary = "create", f"generate a token ({what})"
            else:
                action = "update"
                how = "shorter than" if cur.size < size else "not exactly"
                summary = f"replace a {cur.size}-byte token, {how} {size} hex chars ({what})"
            return [Change(self.label, action, summary, steps=[step],
                           diff=NoteDiff(self.path, note=f"{summary}; never shown"),
                           notify=self.notify, invalidates=invalidates)]
        cmd = attrs_command(self.path, cur, self.owner, self.group, self.mode)
        if cmd is None:
            return []
        notes = ", ".join(attr_notes(cur, self.owner, self.group, self.mode))
        # owner/mode only: the token itself is unchanged, nothing to restart
        return [Change(self.label, "update", notes, steps=[Step(cmd)],
                       diff=NoteDiff(f"{self.path} ({notes})", note="token unchanged"),
                       invalidates=invalidates)]



#: roles write generated_secret(...) like the other ops' names
generated_secret = GeneratedSecret
