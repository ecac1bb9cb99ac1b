"""File facts: what a path is on the target, with its exact bytes.

Targets have no Python, so the probe is POSIX sh + coreutils (`stat`,
`base64`, `sha256sum`). Content travels as base64 so any byte, a NUL or a
missing final newline survives the trip and the text-mode batch exactly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact, FactError, FactSelector

#: Files bigger than this are compared by sha256 only: the batch is one
#: round trip and a multi-megabyte blob would dominate it.
CONTENT_LIMIT = 1024 * 1024

# One line of `stat`: numeric ids first (names may be "UNKNOWN"), names last;
# user and group names cannot contain ':' (passwd format), so ':' splits safely.
_PROBE = (
    "if s=$(stat -c '%u:%g:%a:%s:%U:%G' -- \"$p\" 2>&1); then"
    ' if [ -L "$p" ]; then echo link; printf "%s\\n" "$s"; readlink -- "$p" | base64;'
    ' elif [ -d "$p" ]; then echo directory; printf "%s\\n" "$s";'
    ' elif [ -f "$p" ]; then echo file; printf "%s\\n" "$s"; z=${s#*:*:*:}; z=${z%%:*};'
    ' if @SEND@ && [ "$z" -le @LIMIT@ ]; then echo base64; base64 <"$p"; echo "rc $?";'
    ' else h=$(sha256sum <"$p") && echo "sha256 ${h%% *}"; fi;'
    ' else echo other; printf "%s\\n" "$s"; fi;'
    ' else case $s in *"No such file"*|*"Not a directory"*) echo absent;;'
    ' *) printf "error %s\\n" "$s";; esac; fi'
)


@dataclass(frozen=True)
class FileInfo:
    """A path that exists. `content` is None for directories, links, other
    types, files over the size limit, or when the fact was asked without it."""

    type: str                 # file | directory | link | other
    owner: str                # user name, or the uid when it has no name
    group: str
    mode: str                 # 4-digit octal string: "0644", "4755"
    size: int
    uid: int
    gid: int
    sha256: str | None = None         # files only
    content: bytes | None = field(default=None, repr=False)
    link_target: str | None = None    # links only, as readlink prints it

    def owned_by(self, owner: str, group: str) -> bool:
        """Names or numeric ids both match: a role may say "1000"."""
        return owner in (self.owner, str(self.uid)) and group in (self.group, str(self.gid))


@dataclass(frozen=True)
class FileState(Fact["FileInfo | None"]):
    """The state of one path (not following a final symlink); None = absent.

    sudo is per instance: /etc/ssh, /etc/sudoers.d or a 0600 token file need
    root to read, most paths do not, and a non-root drift-check should not
    need sudo for the rest.
    """

    path: str
    content: bool = True
    limit: int = CONTENT_LIMIT
    # kw_only: the base's `sudo` ClassVar already holds the first field slot
    sudo: bool = field(default=False, kw_only=True)  # type: ignore[misc]

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"FileState needs an absolute path, got {self.path!r}")

    @staticmethod
    def at(path: str) -> FileAt:
        """Selects every FileState of `path` (for Change.invalidates)."""
        return FileAt(path)

    @staticmethod
    def under(directory: str) -> FilesUnder:
        """Selects every FileState below `directory`."""
        return FilesUnder(directory)

    def command(self) -> Command:
        # `stat` failing tells absent (ENOENT/ENOTDIR) from unreadable (EACCES):
        # a probe that cannot look must never answer "absent".
        send = "true" if self.content else "false"
        return Command(Raw("p=" + Command(self.path).shell() + ";"),
                       Raw(_PROBE.replace("@SEND@", send).replace("@LIMIT@", str(int(self.limit)))))

    def process(self, output: str, exit_code: int) -> FileInfo | None:
        lines = output.splitlines()
        if not lines:
            raise FactError(f"{self.path}: no output from the file probe")
        kind = lines[0]
        if kind == "absent":
            return None
        if kind.startswith("error"):
            hint = "" if self.sudo else " (does it need sudo=True?)"
            raise FactError(f"cannot stat {self.path}: {kind[6:].strip()}{hint}")
        if kind not in ("file", "directory", "link", "other") or len(lines) < 2:
            raise FactError(f"{self.path}: unexpected probe output {output[:200]!r}")
        uid, gid, mode, size, owner, group = lines[1].split(":", 5)
        info = dict(type=kind, owner=owner if owner != "UNKNOWN" else uid,
                    group=group if group != "UNKNOWN" else gid,
                    mode=mode.zfill(4), size=int(size), uid=int(uid), gid=int(gid))
        rest = lines[2:]
        if kind == "link":
            info["link_target"] = _b64(self.path, "".join(rest)).decode(
                "utf-8", "surrogateescape").rstrip("\n")
        elif kind == "file":
            info.update(_file_body(self.path, rest, self.sudo))
        return FileInfo(**info)  # type: ignore[arg-type]


def _file_body(path: str, rest: list[str], sudo: bool) -> dict[str, object]:
    if rest and rest[0] == "base64":
        if len(rest) < 2 or rest[-1] != "rc 0":
            hint = "" if sudo else " (does it need sudo=True?)"
            raise FactError(f"cannot read {path}{hint}")
        data = _b64(path, "".join(rest[1:-1]))
        return {"content": data, "sha256": hashlib.sha256(data).hexdigest()}
    if rest and rest[0].startswith("sha256 ") and len(rest[0]) == 7 + 64:
        return {"sha256": rest[0][7:]}
    hint = "" if sudo else " (does it need sudo=True?)"
    raise FactError(f"cannot read {path}{hint}")


def _b64(path: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FactError(f"{path}: corrupt base64 from the target: {exc}") from exc


@dataclass(frozen=True)
class FileAt(FactSelector):
    """Every FileState of one path (whatever its content/sudo options)."""

    path: str

    def matches(self, fact: Fact[Any]) -> bool:
        return isinstance(fact, FileState) and fact.path == self.path


@dataclass(frozen=True)
class FilesUnder(FactSelector):
    """Every FileState strictly below a directory (what `rm -r` removes)."""

    directory: str

    def matches(self, fact: Fact[Any]) -> bool:
        return (isinstance(fact, FileState)
                and fact.path.startswith(self.directory.rstrip("/") + "/"))
