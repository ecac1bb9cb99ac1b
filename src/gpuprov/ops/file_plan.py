"""How a file op plans: its argument checks, the FileState it reads (with
sudo or not), owner/mode fixes, diffs, and the Changes of a content write.

Shared by the ops that write files (ops/files, jsonfile, tokens, sshd); every
write and removal they plan is ops/atomic.py's one mechanism.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

from gpuprov.command import MASK, Command
from gpuprov.errors import GpuprovError
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.atomic import as_user, not_symlink, safe_dirs_check, write_command, write_step
from gpuprov.ops.base import Change, Diff, Step

ROOT_ONLY_PREFIXES = ("/etc/ssh/", "/etc/sudoers", "/etc/shadow", "/etc/gshadow",
                      "/root/", "/var/lib/gpuprov/")

_MODE_RE = re.compile(r"[0-7]{3,4}")


class FileOpError(GpuprovError):
    """A file op cannot plan (a directory where a file should be, bad JSON...)."""


@dataclass(frozen=True)
class NoteDiff(Diff):
    """A diff that is one line of explanation instead of text lines
    (binary content, owner/mode only, a file too big to transfer).
    Build it as NoteDiff(label, note=...)."""

    before: str | None = None
    after: str | None = None
    note: str = ""

    def unified(self) -> str:
        return f"--- {self.label}\n+++ {self.label}\n{self.note}\n"


# --------------------------------------------------------------------------
# argument checks

def file_mode(mode: object) -> str:
    """A file mode, validated: "644" or "0644" -> "0644". An int is refused:
    0644 unquoted in YAML is 420 and in Python a syntax error, the classic
    chmod surprise."""
    if isinstance(mode, int):
        raise TypeError(f"file mode must be a string like '0644', got the number {mode!r}; "
                        "quote it (unquoted 0644 is read as a number in YAML)")
    if not isinstance(mode, str) or not _MODE_RE.fullmatch(mode):
        raise ValueError(f"file mode must be 3 or 4 octal digits like '0644', got {mode!r}")
    return mode.zfill(4)


def check_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must be absolute, got {path!r}")
    norm = posixpath.normpath(path)
    if norm in ("/", "//"):
        raise ValueError("refusing to manage '/' as a file")
    return norm


def state_fact(path: str, mode: str | None = None, read_as_root: bool | None = None,
               content: bool = True, probe: str | None = None) -> FileState:
    """The FileState an op reads for `path`, with sudo decided by needs_root()
    (on `probe` when given) unless the caller says read_as_root."""
    root = needs_root(probe or path, mode) if read_as_root is None else read_as_root
    return FileState(path, content=content, sudo=root)


def check_validate(validate: str | None) -> str | None:
    if validate is not None and "{}" not in validate:
        raise ValueError(f"validate must name the temp file with {{}}: {validate!r}")
    return validate


def needs_root(path: str, mode: str | None = None) -> bool:
    """Whether the FileState of path should be read with sudo: known root-only
    places, or a wanted mode that others cannot read (a 0600 token file)."""
    if path.startswith(ROOT_ONLY_PREFIXES):
        return True
    return mode is not None and not int(mode, 8) & 0o004


# --------------------------------------------------------------------------
# planning: owner/mode fixes, diffs, the Changes of a content write

def attrs_command(path: str, cur: FileInfo, owner: str, group: str, mode: str,
                  user: str | None = None) -> Command | None:
    """chown/chmod of `path` where they differ, never through a symlink: the
    directories above must be safe (safe_dirs_check: nobody else can swap
    `path` between the test and the change), `path` not a symlink (chmod has
    no -h), chown -h. Run by `user` instead of root when given."""
    cmds = []
    if not cur.owned_by(owner, group):
        cmds.append(Command("chown", "-h", f"{owner}:{group}", "--", path))
    if cur.mode != mode:
        cmds.append(Command("chmod", mode, "--", path))
    if not cmds:
        return None
    return as_user(Command.join([safe_dirs_check(path), not_symlink(path), *cmds]), user)


def attr_notes(cur: FileInfo | None, owner: str, group: str, mode: str) -> list[str]:
    if cur is None:
        return []
    notes = []
    if owner not in (cur.owner, str(cur.uid)):
        notes.append(f"owner {cur.owner} -> {owner}")
    if group not in (cur.group, str(cur.gid)):
        notes.append(f"group {cur.group} -> {group}")
    if cur.mode != mode:
        notes.append(f"mode {cur.mode} -> {mode}")
    return notes


def _text(data: bytes | None) -> str | None:
    if data is None or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def content_diff(label: str, cur: FileInfo | None, new: bytes | None, secret: bool) -> Diff:
    """before/after text; masked when secret; a note for binary or big files."""
    if secret:
        return Diff(label, None if cur is None else MASK, None if new is None else MASK,
                    secret=True)
    before = None if cur is None else _text(cur.content)
    after = None if new is None else _text(new)
    if (cur is None or before is not None) and (new is None or after is not None):
        return Diff(label, before, after)
    old_sha = "(absent)" if cur is None else (cur.sha256 or "?")[:12]
    new_sha = "(absent)" if new is None else hashlib.sha256(new).hexdigest()[:12]
    what = ("content differs, too large to show" if cur is not None and cur.content is None
            else "binary content differs")
    return NoteDiff(label, note=f"{what} (sha256 {old_sha} -> {new_sha})")


def plan_write(path: str, cur: FileInfo | None, content: bytes, *, owner: str, group: str,
               mode: str, validate: str | None = None, backup: bool = False,
               secret: bool = False, notify: tuple[str, ...] = (),
               user: str | None = None) -> list[Change]:
    """The Changes that make `path` hold exactly `content` with owner/mode;
    written by `user` instead of root when given (see atomic.as_user())."""
    if cur is not None and cur.type in ("directory", "other"):
        kind = "a directory" if cur.type == "directory" else "not a regular file"
        raise FileOpError(f"{path} is {kind}; refusing to replace it with a file",
                          hint="remove it first with absent(path, recursive=True)")
    invalidates = (FileState.at(path),)
    notes = attr_notes(cur, owner, group, mode) if cur is not None and cur.type == "file" else []
    label = path + (f" ({', '.join(notes)})" if notes else "")
    same_content = (cur is not None and cur.type == "file"
                    and cur.sha256 == hashlib.sha256(content).hexdigest())
    if same_content and not notes:
        return []
    if same_content:
        cmd = attrs_command(path, cur, owner, group, mode, user)  # type: ignore[arg-type]
        assert cmd is not None  # notes non-empty means some attribute differs
        return [Change(f"file {path}", "update", "; ".join(notes), steps=[Step(cmd)],
                       diff=NoteDiff(label, note="content unchanged"), notify=notify,
                       invalidates=invalidates)]
    step = write_step(path, write_command(path, content, owner, group, mode, validate=validate,
                                          backup=backup and cur is not None
                                          and cur.type == "file", secret=secret, user=user),
                      content)
    if cur is None:
        action, summary = "create", f"create ({len(content)} bytes, {owner}:{group} {mode})"
    elif cur.type == "link":
        action, summary = "update", f"replace symlink -> {cur.link_target} with a file"
    else:
        action, summary = "update", "; ".join(["update content", *notes])
    before = cur if cur is None or cur.type == "file" else None
    return [Change(f"file {path}", action, summary, steps=[step],
                   diff=content_diff(label, before, content, secret), notify=notify,
                   invalidates=invalidates)]
