"""File operations: file, template, absent, directory, line.

They plan from the FileState fact (ops/file_plan.py: checks, diffs, the
Changes of a write); every content write and removal they plan is
ops/atomic.py's one mechanism (temp file beside the target, checked, renamed
over it), so a killed or failed run leaves the old file whole.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, field
from pathlib import Path
from typing import Any

from gpuprov import templating
from gpuprov.command import Command, Raw, Secret
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.atomic import as_user, not_symlink, remove_file_step, safe_dirs_check
from gpuprov.ops.base import Change, Op, Step, operation
from gpuprov.ops.file_plan import (
    FileOpError,
    NoteDiff,
    attr_notes,
    attrs_command,
    check_path,
    check_validate,
    content_diff,
    file_mode,
    plan_write,
    state_fact,
)

# --------------------------------------------------------------------------
# operations

@operation
class File(Op):
    """`path` holds exactly `content` (bytes) with owner/group/mode.

    backup: keep the replaced file beside it; validate: a command that must
    accept the new content before it replaces the file, `{}` naming the temp
    file (e.g. "visudo -cf {}"); secret: diffs and reports mask the content;
    read_as_root: read the current file with sudo (default: needs_root()).
    as_user: write it as this user (runuser), not root: for a file in a
    directory that user owns (~/.ssh), where a root write is refused.
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
    as_user: str | None = None
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
                          backup=self.backup, secret=self.secret, notify=self.notify,
                          user=self.as_user)


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
    """`path` is a directory with owner/group/mode (parents made as needed).
    as_user: made and fixed as this user (runuser), not root (see File)."""

    path: str
    _: KW_ONLY
    owner: str = "root"
    group: str = "root"
    mode: str = "0755"
    read_as_root: bool | None = None
    as_user: str | None = None
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
            # The directories above must be safe (else a user could swap the
            # new one for a symlink before chown/chmod), and what mkdir left
            # must be a real directory: -p succeeds on a symlink to one.
            cmd = as_user(Command.join([
                safe_dirs_check(self.path),
                Command("mkdir", "-p", "--", self.path, Raw("&& [ -d"), self.path, Raw("]")),
                not_symlink(self.path),
                Command("chown", "-h", f"{self.owner}:{self.group}", "--", self.path),
                Command("chmod", self.mode, "--", self.path)]), self.as_user)
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
        fix = attrs_command(self.path, cur, self.owner, self.group, self.mode, self.as_user)
        if fix is None:
            return []
        notes = ", ".join(attr_notes(cur, self.owner, self.group, self.mode))
        return [Change(resource, "update", notes, steps=[Step(fix)],
                       diff=NoteDiff(f"{self.path} ({notes})", note="directory attributes"),
                       notify=self.notify, invalidates=(FileState.at(self.path),))]


def _render_template(source: Path | str, variables: Mapping[str, Any]) -> str:
    """Rendered text: a Secret when a Secret value went into it (gpuprov.templating)."""
    import jinja2  # only ops that render need it loaded

    src = Path(source)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(src.parent)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    try:
        text = templating.render(env.get_template(src.name), variables)
    except jinja2.TemplateNotFound as exc:
        raise FileOpError(f"template {src}: not found ({exc})") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise FileOpError(f"template {exc.filename or src}:{exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise FileOpError(f"template {src}: {exc.message}",
                          hint="define the variable in the role defaults, inventory or -e") from exc
    return str(text) if not isinstance(text, str) else text


@operation
class Line(Op):
    """One line of a file present (replacing the last `regexp` match, else
    inserted) or absent (every line equal to it or matching `regexp`).

    insert_after / insert_before: a regexp of the line to insert next to (its
    last match; "EOF" / "BOF" for the end / start), when no line matches
    `regexp`. create: a missing file is created with the line. owner, group
    and mode are kept as they are unless given. backup, validate,
    read_as_root and as_user: as for File.
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
    as_user: str | None = None
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
                          notify=self.notify, user=self.as_user)

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

def file(path: str, content: str | bytes, **options: Any) -> File:
    """path holds exactly content: a str is written as UTF-8, as is; a Secret
    (e.g. ctx.render() of a template that used one) is written as it is and
    makes the File secret: diff masked, no digest. options: those of File."""
    if isinstance(content, Secret):
        content, options["secret"] = content.value, True
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return File(path, data, **options)


def template(path: str, template: Path | str, vars: Mapping[str, Any] | None = None,
             **options: Any) -> File:
    """path holds the Jinja2 template file rendered locally with vars.

    Undefined variables are errors; a trailing newline is kept as written;
    a Secret value going into it makes the File secret (see file()).
    options: those of File.
    """
    return file(path, _render_template(template, vars or {}), **options)


#: absent(path, recursive=False): path does not exist (see Absent)
absent = Absent
#: directory(path, owner=, group=, mode=): path is a directory (see Directory)
directory = Directory
#: line(path, line, regexp=, ...): one line present in, or absent from, path (see Line)
line = Line
