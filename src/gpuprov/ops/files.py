"""File operations: file, template, absent, directory, line.

They plan from the FileState fact; every content write and removal they
plan is ops/atomic.py's one mechanism (temp file beside the target, checked,
renamed over it), so a killed or failed run leaves the old file whole.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from gpuprov.command import MASK, Command, Raw, Secret
from gpuprov.errors import GpuprovError
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.atomic import remove_file_step, write_command
from gpuprov.ops.base import Change, Diff, Op, Step, operation

# Paths whose state only root may read: the fact for them runs with sudo.
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

def attrs_command(path: str, cur: FileInfo, owner: str, group: str, mode: str) -> Command | None:
    cmds = []
    if not cur.owned_by(owner, group):
        cmds.append(Command("chown", f"{owner}:{group}", path))
    if cur.mode != mode:
        cmds.append(Command("chmod", mode, path))
    return Command.join(cmds) if cmds else None


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
               secret: bool = False, notify: tuple[str, ...] = ()) -> list[Change]:
    """The Changes that make `path` hold exactly `content` with owner/mode."""
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
        cmd = attrs_command(path, cur, owner, group, mode)  # type: ignore[arg-type]
        assert cmd is not None  # notes non-empty means some attribute differs
        return [Change(f"file {path}", "update", "; ".join(notes), steps=[Step(cmd)],
                       diff=NoteDiff(label, note="content unchanged"), notify=notify,
                       invalidates=invalidates)]
    step = Step(write_command(path, content, owner, group, mode, validate=validate,
                              backup=backup and cur is not None and cur.type == "file",
                              secret=secret),
                stdin=content)
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


# --------------------------------------------------------------------------
# operations

@operation
class File(Op):
    """`path` holds exactly `content` (bytes) with owner/group/mode.

    backup: keep the replaced file beside it; validate: a command that must
    accept the new content before it replaces the file, `{}` naming the temp
    file (e.g. "visudo -cf {}"); secret: diffs and reports mask the content;
    read_as_root: read the current file with sudo (default: needs_root()).
    """

    path: str
    content: bytes
    _: KW_ONLY
    owner: str = "root"
    group: str = "root"
    mode: str = "0644"
    backup: bool = False
    validate: str | None = None
    secret: bool = False
    read_as_root: bool | None = None
    fact: FileState = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.path = check_path(self.path)
        self.owner, self.group, self.mode = str(self.owner), str(self.group), file_mode(self.mode)
        self.validate = check_validate(self.validate)
        self.label = f"file {self.path}"
        self.fact = state_fact(self.path, self.mode, self.read_as_root)

    def facts(self) -> Sequence[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: FactView) -> list[Change]:
        return plan_write(self.path, facts[self.fact], self.content, owner=self.owner,
                          group=self.group, mode=self.mode, validate=self.validate,
                          backup=self.backup, secret=self.secret, notify=self.notify)


@operation
class Absent(Op):
    """`path` does not exist. A directory is removed only with recursive=True
    (otherwise `rmdir`, which refuses a non-empty one)."""

    path: str
    _: KW_ONLY
    recursive: bool = False
    secret: bool = False
    read_as_root: bool | None = None
    fact: FileState = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.path = check_path(self.path)
        self.label = f"absent {self.path}"
        self.fact = state_fact(self.path, read_as_root=self.read_as_root)

    def facts(self) -> Sequence[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: FactView) -> list[Change]:
        cur: FileInfo | None = facts[self.fact]
        if cur is None:
            return []
        inval = (FileState.at(self.path),)
        if cur.type == "directory":
            cmd = Command("rm", "-rf", self.path) if self.recursive else Command("rmdir", self.path)
            summary = "delete directory" + (" and its contents" if self.recursive else "")
            return [Change(f"directory {self.path}", "delete", summary, steps=[Step(cmd)],
                           diff=NoteDiff(self.path, note=summary), notify=self.notify,
                           invalidates=inval + (FileState.under(self.path),))]
        diff = (content_diff(self.path, cur, None, self.secret) if cur.type == "file"
                else NoteDiff(self.path, note=f"delete {cur.type}"))
        return [Change(f"file {self.path}", "delete", f"delete {cur.type}",
                       steps=[remove_file_step(self.path)], diff=diff,
                       notify=self.notify, invalidates=inval)]


@operation
class Directory(Op):
    """`path` is a directory with owner/group/mode (parents made as needed)."""

    path: str
    _: KW_ONLY
    owner: str = "root"
    group: str = "root"
    mode: str = "0755"
    read_as_root: bool | None = None
    fact: FileState = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.path = check_path(self.path)
        self.owner, self.group, self.mode = str(self.owner), str(self.group), file_mode(self.mode)
        self.label = f"directory {self.path}"
        # stat of a directory needs only search rights on its parent, so its
        # own mode says nothing about needing root: only the place does
        self.fact = state_fact(self.path, read_as_root=self.read_as_root, content=False,
                               probe=self.path + "/")

    def facts(self) -> Sequence[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: FactView) -> list[Change]:
        cur: FileInfo | None = facts[self.fact]
        resource = f"directory {self.path}"
        if cur is None:
            cmd = Command("mkdir", "-p", self.path, Raw("&&"), "chown",
                          f"{self.owner}:{self.group}", self.path, Raw("&&"),
                          "chmod", self.mode, self.path)
            # mkdir -p may create parents too: their facts go stale as well
            parents, p = [], self.path
            while (p := posixpath.dirname(p)) not in ("/", ""):
                parents.append(FileState.at(p))
            attrs = f"{self.owner}:{self.group} {self.mode}"
            return [Change(resource, "create", f"create ({attrs})", steps=[Step(cmd)],
                           diff=NoteDiff(self.path, note=f"directory created, {attrs}"),
                           notify=self.notify,
                           invalidates=(FileState.at(self.path), *parents))]
        if cur.type != "directory":
            what = f"a symlink to {cur.link_target}" if cur.type == "link" else f"a {cur.type}"
            raise FileOpError(f"{self.path} exists and is {what}, not a directory",
                              hint="manage the real path, or remove it first with absent()")
        cmd = attrs_command(self.path, cur, self.owner, self.group, self.mode)
        if cmd is None:
            return []
        notes = ", ".join(attr_notes(cur, self.owner, self.group, self.mode))
        return [Change(resource, "update", notes, steps=[Step(cmd)],
                       diff=NoteDiff(f"{self.path} ({notes})", note="directory attributes"),
                       notify=self.notify, invalidates=(FileState.at(self.path),))]


def _render_template(source: Path | str, variables: Mapping[str, Any]) -> tuple[str, bool]:
    """Rendered text, and whether a Secret value went into it."""
    import jinja2  # only ops that render need it loaded

    src = Path(source)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(src.parent)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    found_secret = False

    def reveal(value: Any) -> Any:  # a Secret would render as the mask otherwise
        nonlocal found_secret
        if isinstance(value, Secret):
            found_secret = True
            return value.value
        if isinstance(value, Mapping):
            return {k: reveal(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(reveal(v) for v in value)
        return value

    try:
        text = env.get_template(src.name).render(reveal(dict(variables)))
    except jinja2.TemplateNotFound as exc:
        raise FileOpError(f"template {src}: not found ({exc})") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise FileOpError(f"template {exc.filename or src}:{exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise FileOpError(f"template {src}: {exc.message}",
                          hint="define the variable in the role defaults, inventory or -e") from exc
    return text, found_secret


@operation
class Line(Op):
    """One line of a file present (replacing the last `regexp` match, else
    inserted) or absent (every line equal to it or matching `regexp`).

    insert_after / insert_before: a regexp of the line to insert next to (its
    last match; "EOF" / "BOF" for the end / start), when no line matches
    `regexp`. create: a missing file is created with the line. owner, group
    and mode are kept as they are unless given. backup, validate and
    read_as_root: as for File.
    """

    path: str
    line: str | None
    _: KW_ONLY
    regexp: str | None = None
    insert_after: str | None = None
    insert_before: str | None = None
    state: str = "present"
    create: bool = False
    owner: str | None = None
    group: str | None = None
    mode: str | None = None
    backup: bool = False
    validate: str | None = None
    read_as_root: bool | None = None
    pattern: re.Pattern[str] | None = field(init=False)
    fact: FileState = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        line, state, regexp = self.line, self.state, self.regexp
        if state not in ("present", "absent"):
            raise ValueError(f"line state must be 'present' or 'absent', got {state!r}")
        if line is not None and "\n" in line:
            raise ValueError(f"line must be a single line, got {line!r}")
        if state == "present" and line is None:
            raise ValueError("line(state='present') needs the line")
        if line is None and regexp is None:
            raise ValueError("line(state='absent') needs the line or a regexp")
        if self.insert_after and self.insert_before:
            raise ValueError("give insert_after or insert_before, not both")
        self.path = check_path(self.path)
        self.pattern = re.compile(regexp) if regexp else None
        self.mode = file_mode(self.mode) if self.mode is not None else None
        self.label = f"line in {self.path}"
        self.fact = state_fact(self.path, self.mode, self.read_as_root)

    def facts(self) -> Sequence[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: FactView) -> list[Change]:
        cur: FileInfo | None = facts[self.fact]
        if cur is None:
            if self.state == "absent":
                return []
            if not self.create:
                raise FileOpError(f"{self.path} does not exist",
                                  hint="pass create=True to create it with the line")
            old = ""
        elif cur.type != "file" or cur.content is None:
            why = "too large to edit" if cur.type == "file" else f"a {cur.type}"
            raise FileOpError(f"{self.path} is {why}; cannot edit a line in it")
        else:
            old = cur.content.decode("utf-8", "surrogateescape")
        new = self.edit(old)
        owner = self.owner or (cur.owner if cur else "root")
        group = self.group or (cur.group if cur else "root")
        mode = self.mode or (cur.mode if cur else "0644")
        return plan_write(self.path, cur, new.encode("utf-8", "surrogateescape"), owner=owner,
                          group=group, mode=mode, validate=self.validate, backup=self.backup,
                          notify=self.notify)

    def edit(self, text: str) -> str:
        """The text with the line present/absent (Ansible lineinfile rules)."""
        lines = text.splitlines(keepends=True)
        bare = [ln.rstrip("\n") for ln in lines]

        def matches(i: int) -> bool:
            if self.pattern is not None:
                return self.pattern.search(bare[i]) is not None
            return bare[i] == self.line

        if self.state == "absent":
            return "".join(ln for i, ln in enumerate(lines) if not matches(i))
        assert self.line is not None
        hits = [i for i in range(len(lines)) if self.pattern and matches(i)]
        if hits:
            i = hits[-1]
            lines[i] = self.line + lines[i][len(bare[i]):]
            return "".join(lines)
        if self.line in bare:
            return text
        pos = len(lines)
        anchor = self.insert_after or self.insert_before
        if anchor == "BOF" and self.insert_before:
            pos = 0
        elif anchor and anchor != "EOF":
            found = [i for i, b in enumerate(bare) if re.search(anchor, b)]
            if found:
                pos = found[-1] + (1 if self.insert_after else 0)
        if pos > 0 and not lines[pos - 1].endswith("\n"):
            lines[pos - 1] += "\n"
        lines.insert(pos, self.line + "\n")
        return "".join(lines)


# --------------------------------------------------------------------------
# the names roles call: a factory only where it adds something to the class

def file(path: str, content: str | bytes | Secret, **options: Any) -> File:
    """path holds exactly content: a str is written as UTF-8, as is; a Secret
    is revealed into the file and masks the diff. options: those of File."""
    if isinstance(content, Secret):
        content, options["secret"] = content.value, True
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return File(path, data, **options)


def template(path: str, template: Path | str, vars: Mapping[str, Any] | None = None,
             **options: Any) -> File:
    """path holds the Jinja2 template file rendered locally with vars.

    Undefined variables are errors; a trailing newline is kept as written;
    a Secret value is rendered revealed and makes the diff masked.
    options: those of File.
    """
    text, has_secret = _render_template(template, vars or {})
    if has_secret:
        options["secret"] = True
    return file(path, text, **options)


#: absent(path, recursive=False): path does not exist (see Absent)
absent = Absent
#: directory(path, owner=, group=, mode=): path is a directory (see Directory)
directory = Directory
#: line(path, line, regexp=, ...): one line present in, or absent from, path (see Line)
line = Line
