"""json_merge: keep some keys of a JSON file (e.g. /etc/docker/daemon.json)
as wanted, leave every other key alone.

Targets have no Python (and often no jq), so the file is read with the
FileState fact, merged on the controller, and written back through the same
atomic write + validate as every file op. Values are compared parsed, not
as text, so a file that differs only in formatting is left as it is.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, field
from typing import Any

from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.base import Change, Op, operation
from gpuprov.ops.file_plan import (
    FileOpError,
    check_path,
    check_validate,
    file_mode,
    plan_write,
    state_fact,
)

KeyPath = tuple[str, ...]


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of base with patch merged in: dicts recursively, anything else
    (lists included) replaced. Key order of base is kept, new keys go last."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def remove_key(doc: dict[str, Any], path: KeyPath) -> None:
    """Delete doc[path[0]][path[1]]...; a missing key is already removed."""
    node: Any = doc
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def same_json(a: Any, b: Any) -> bool:
    """Equality of parsed JSON where true != 1 (Python says True == 1),
    while 1 == 1.0 stays equal (the same JSON number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def dump_json(doc: Any) -> str:
    """The one stable format gpuprov writes: indent 4, key order kept, UTF-8
    as is, trailing newline."""
    return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"


@operation
class JsonMerge(Op):
    """The JSON object in `path` contains `patch` (deep-merged) and none of
    the key paths in `remove` (e.g. remove=[("runtimes", "nvidia")] or
    ["debug"]); other keys are kept untouched. owner, group, mode, validate,
    backup, secret and read_as_root: as for files.File.
    """

    path: str
    patch: Mapping[str, Any]
    _: KW_ONLY
    remove: Iterable[str | Sequence[str]] = ()
    owner: str = "root"
    group: str = "root"
    mode: str = "0644"
    validate: str | None = None
    backup: bool = False
    secret: bool = False
    read_as_root: bool | None = None
    #: `remove` as key paths
    remove_paths: tuple[KeyPath, ...] = field(init=False)
    fact: FileState = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.path = check_path(self.path)
        try:  # fail in the role, not on the host, for a value JSON cannot hold
            json.dumps(self.patch)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"json_merge({self.path}): patch is not JSON data: {exc}") from exc
        self.patch = copy.deepcopy(dict(self.patch))
        self.remove_paths = tuple((r,) if isinstance(r, str) else tuple(r) for r in self.remove)
        for key_path in self.remove_paths:
            if not key_path or _in_patch(self.patch, key_path):
                raise ValueError(f"json_merge({self.path}): cannot both set and remove "
                                 f"{'.'.join(key_path) or '(empty key path)'}")
        self.owner, self.group, self.mode = str(self.owner), str(self.group), file_mode(self.mode)
        self.validate = check_validate(self.validate)
        self.label = f"json_merge {self.path}"
        self.fact = state_fact(self.path, self.mode, self.read_as_root)

    def facts(self) -> Sequence[Fact[Any]]:
        return [self.fact]

    def wanted(self, current: dict[str, Any]) -> dict[str, Any]:
        doc = deep_merge(current, self.patch)
        for key_path in self.remove_paths:
            remove_key(doc, key_path)
        return doc

    def plan(self, facts: FactView) -> list[Change]:
        cur: FileInfo | None = facts[self.fact]
        current = self.read(cur)
        doc = self.wanted(current if current is not None else {})
        if current is not None and same_json(current, doc):
            # values already right: keep the bytes (and formatting) as they are,
            # only owner/mode can still differ
            assert cur is not None and cur.content is not None
            content = cur.content
        else:
            content = dump_json(doc).encode("utf-8")
        return plan_write(self.path, cur, content, owner=self.owner, group=self.group,
                          mode=self.mode, validate=self.validate, backup=self.backup,
                          secret=self.secret, notify=self.notify)

    def read(self, cur: FileInfo | None) -> dict[str, Any] | None:
        """The current document; None when the file is absent (or empty,
        which is how a package ships an unconfigured daemon.json)."""
        if cur is None:
            return None
        if cur.type != "file":
            raise FileOpError(f"{self.path} is a {cur.type}, not a JSON file")
        if cur.content is None:
            raise FileOpError(f"{self.path} is too large ({cur.size} bytes) to merge")
        if not cur.content.strip():
            return None
        try:
            doc = json.loads(cur.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FileOpError(f"{self.path} on the host is not valid JSON ({exc}); "
                              "not overwriting it",
                              hint="fix or remove the file by hand, then re-run") from exc
        if not isinstance(doc, dict):
            raise FileOpError(f"{self.path} holds a JSON {type(doc).__name__}, not an object; "
                              "not overwriting it")
        return doc


def _in_patch(patch: Mapping[str, Any], key_path: KeyPath) -> bool:
    node: Any = patch
    for key in key_path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


#: json_merge(path, patch, remove=...): see JsonMerge
json_merge = JsonMerge
