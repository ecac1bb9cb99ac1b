"""A controller file copied to the host as it is: wheels, archives, keys.

Unlike file() it never brings the host's copy back to compare (the FileState
is asked for its sha256 only: a wheelhouse of a few MB would otherwise ride
in every facts batch as base64), and its diff is always one line naming the
digests, never the bytes (binary, or a secret). The write itself is
ops/atomic.py's, its content fed on the step's stdin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import KW_ONLY, field, replace
from pathlib import Path
from typing import Any

from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.base import Change, Op, operation
from gpuprov.ops.file_plan import (
    FileOpError,
    NoteDiff,
    check_path,
    file_mode,
    plan_write,
    state_fact,
)


@operation
class Upload(Op):
    """`path` on the host holds exactly the bytes of the controller file
    `source`, with owner/group/mode; compared by sha256, written only where it
    differs. secret: the digests are left out of the diff too (a private key's
    digest would let anyone holding a copy confirm it)."""

    path: str
    source: Path | str
    _: KW_ONLY
    owner: str = "root"
    group: str = "root"
    mode: str = "0644"
    secret: bool = False
    fact: FileState = field(init=False)
    data: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.path = check_path(self.path)
        self.owner, self.group, self.mode = str(self.owner), str(self.group), file_mode(self.mode)
        self.label = f"upload {self.path}"
        try:
            self.data = Path(self.source).read_bytes()
        except OSError as exc:
            raise FileOpError(f"cannot read {self.source} on this machine to copy it to "
                              f"{self.path}: {exc.strerror or exc}") from None
        self.fact = state_fact(self.path, self.mode, content=False)

    def facts(self) -> Sequence[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: FactView) -> list[Change]:
        cur: FileInfo | None = facts[self.fact]
        changes = plan_write(self.path, cur, self.data, owner=self.owner, group=self.group,
                             mode=self.mode, secret=self.secret, notify=self.notify)
        if self.secret:
            note = "secret content, not shown"
        else:
            old = "(absent)" if cur is None else (cur.sha256 or "?")[:12]
            note = f"sha256 {old} -> {hashlib.sha256(self.data).hexdigest()[:12]}"
        diff = NoteDiff(self.path, note=f"{len(self.data)} bytes from {self.source}, {note}")
        # an owner/mode fix alone keeps its own note ("content unchanged")
        return [c if isinstance(c.diff, NoteDiff) and c.diff.note == "content unchanged"
                else replace(c, diff=diff) for c in changes]


#: upload(path, source, owner=, group=, mode=, secret=): see Upload
upload = Upload
