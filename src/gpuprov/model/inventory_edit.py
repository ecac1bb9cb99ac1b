"""Add a host to an inventory file the way a person would: comments, order
and quoting kept (ruamel.yaml round trip), a backup beside it, and an
atomic replace, so a killed run leaves either the old file or the new one."""

from __future__ import annotations

import difflib
import io
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from gpuprov.errors import InventoryError


def _yaml() -> YAML:
    yaml = YAML()            # round-trip mode
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096        # never re-wrap a person's long lines
    return yaml


def with_host(text: str, path: str, group: str, name: str,
              host_vars: Mapping[str, Any]) -> str:
    """The inventory text with `name` under all.children.<group>.hosts.

    Already there: unchanged. In another group: an error (moving hosts
    between groups is a person's decision). Missing group or hosts: created.
    """
    yaml = _yaml()
    try:
        data = yaml.load(text) if text.strip() else CommentedMap()
    except YAMLError as exc:
        raise InventoryError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = CommentedMap()
    if not isinstance(data, dict):
        raise InventoryError(f"{path}: expected a mapping with `all:` at the top")
    root = _mapping(data, "all", path, "all")
    children = _mapping(root, "children", path, "all.children")
    elsewhere = _find_host(root, name, group)
    if elsewhere:
        raise InventoryError(f"{path}: host {name} is already in group {elsewhere}",
                             hint=f"onboard it with --group {elsewhere}, or move it by hand")
    body = _mapping(children, group, path, f"all.children.{group}")
    hosts = _mapping(body, "hosts", path, f"all.children.{group}.hosts")
    if name in hosts:
        return text
    if hosts:
        # Text insertion after the group's last host: ruamel would hang the new
        # host after a comment that belongs to the next group.
        return _insert_after_last(text, hosts, name, host_vars)
    hosts[name] = CommentedMap(host_vars) if host_vars else None
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _insert_after_last(text: str, hosts: CommentedMap, name: str,
                       host_vars: Mapping[str, Any]) -> str:
    lines = text.splitlines(keepends=True)
    last = list(hosts)[-1]
    line, col = hosts.lc.key(last)
    end = line
    for i in range(line + 1, len(lines)):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(lines[i]) - len(lines[i].lstrip()) <= col:
            break
        end = i
    if lines and not lines[end].endswith("\n"):
        lines[end] += "\n"
    pad = " " * col
    new = [f"{pad}{name}:\n"] + [f"{pad}  {k}: {_scalar(v)}\n" for k, v in host_vars.items()]
    return "".join(lines[:end + 1] + new + lines[end + 1:])


def _scalar(value: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(value, out)
    text = out.getvalue().strip()
    return text.removesuffix("\n...").strip()


def _mapping(parent: Any, key: str, path: str, where: str) -> CommentedMap:
    value = parent.get(key)
    if value is None:
        value = parent[key] = CommentedMap()
    if not isinstance(value, dict):
        raise InventoryError(f"{path}: {where} must be a mapping")
    return cast(CommentedMap, value)   # the round-trip loader's mappings


def _find_host(group: Any, name: str, wanted: str, label: str = "all") -> str | None:
    """The group (other than `wanted`) that lists `name`, if any."""
    if not isinstance(group, dict):
        return None
    hosts = group.get("hosts")
    if isinstance(hosts, dict) and name in hosts and label != wanted:
        return label
    children = group.get("children")
    if isinstance(children, dict):
        for child, body in children.items():
            found = _find_host(body, name, wanted, str(child))
            if found:
                return found
    return None


def diff(path: str, before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True),
                                        after.splitlines(keepends=True),
                                        fromfile=path, tofile=f"{path} (with the new host)"))


def _backup(path: Path) -> Path:
    """A copy of `path` beside it, made with O_EXCL|O_NOFOLLOW: a name
    planted in advance (a symlink) is never followed nor overwritten."""
    data = path.read_bytes()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        backup = path.with_name(f"{path.name}.{stamp}{f'-{n}' if n else ''}.bak")
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        shutil.copystat(path, backup)
        return backup
    raise InventoryError(f"{path}: cannot make a backup beside it (too many {stamp} backups)")


def replace_with_backup(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically after copying the old file to a
    timestamped backup beside it; returns the backup's path."""
    backup = _backup(path)
    # mkstemp: a fresh name opened O_EXCL, mode 0600, so a planted symlink or
    # file is never followed and nobody reads the text before the mode is set;
    # beside the target, so os.replace stays one atomic rename.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gpuprov-tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), stat.S_IMODE(os.stat(path).st_mode))
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return backup
