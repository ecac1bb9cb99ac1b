"""Load YAML into plain Python data that remembers where every key came from.

Every later error (inventory, playbook, role defaults, -e @file) must say
`path:line: what is wrong`, so mappings and sequences are returned as
`YamlMap` / `YamlList`: ordinary dict / list subclasses that also carry the
file and the line of each key or item. Use `location()` to get it.

YAML 1.1 pitfalls are deliberately not copied, because they silently
change what a person wrote:
- only true/false (any case) are booleans; yes/no/on/off/y/n stay strings;
- integers with a leading zero (0644) stay strings, so a file mode is never
  turned into decimal 420 or 644; 0o/0x prefixes are not numbers either;
- dates stay strings (they are not JSON-serialisable and rarely meant);
- a key repeated in one mapping is an error (plain loaders keep the last).

A `!secret` tag on a scalar gives a `command.Secret` (a str, taken literally:
never rendered as a template) so every output can mask it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gpuprov.command import Secret
from gpuprov.errors import InventoryError

__all__ = [
    "Location",
    "YamlList",
    "YamlMap",
    "load_yaml",
    "load_yaml_string",
    "close_names",
    "decode_text",
    "did_you_mean",
    "kind_of",
    "location",
]

_PLAIN = "gpuprov:plain"  # marks an untagged plain scalar; we resolve it ourselves
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_SECRET = "!secret"

_INT_RE = re.compile(r"[-+]?(0|[1-9][0-9_]*)")
_FLOAT_RE = re.compile(r"[-+]?(0|[1-9][0-9_]*)?\.[0-9_]*([eE][-+]?[0-9]+)?"
                       r"|[-+]?(0|[1-9][0-9_]*)[eE][-+]?[0-9]+")
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"),
                   ".nan": float("nan")}


class Location(NamedTuple):
    """Where a value was written; unpacks into InventoryError(msg, *loc)."""

    file: str | None
    line: int | None

    def __str__(self) -> str:
        if not self.file:
            return "<unknown>"
        return f"{self.file}:{self.line}" if self.line else self.file


class YamlMap(dict):
    """A dict that knows its file, its own line and the line of each key."""

    def __init__(self, *args: Any, file: str | None = None, line: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.file = file
        self.line = line
        self.key_lines: dict[Any, int] = {}


class YamlList(list):
    """A list that knows its file, its own line and the line of each item."""

    def __init__(self, *args: Any, file: str | None = None, line: int | None = None) -> None:
        super().__init__(*args)
        self.file = file
        self.line = line
        self.item_lines: list[int] = []


_NO_KEY = object()


def location(obj: Any, key: Any = _NO_KEY) -> Location:
    """Location of `obj` (a YamlMap/YamlList) or of one key / item index in it.

    Falls back to the container's own line when the key was not written in
    the file (e.g. added by a merge), and to Location(None, None) for plain
    Python data (values from -e or built in code).
    """
    file = getattr(obj, "file", None)
    line = getattr(obj, "line", None)
    if key is _NO_KEY:
        return Location(file, line)
    if isinstance(obj, YamlMap):
        return Location(file, obj.key_lines.get(key, line))
    if isinstance(obj, YamlList) and isinstance(key, int) and -len(obj) <= key < len(obj):
        return Location(file, obj.item_lines[key])
    return Location(file, line)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose only job is to compose nodes; we construct ourselves."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)


def load_yaml(path: str | Path, error_cls: type[InventoryError] = InventoryError) -> Any:
    """Load one YAML document from `path`; None for an empty file."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise error_cls("file not found", name) from None
    except OSError as e:
        raise error_cls(f"cannot read file: {e.strerror or e}", name) from None
    return load_yaml_string(decode_text(data, name, error_cls), name, error_cls)


def decode_text(data: bytes, name: str,
                error_cls: type[InventoryError] = InventoryError) -> str:
    """A YAML file's bytes as text; a binary or non-UTF-8 file is refused
    naming the line and byte offset of the first bad byte (a codec error
    names neither)."""
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start if nul < 0 else min(nul, e.start)
    else:
        if nul < 0:
            return text
        bad = nul
    line = data.count(b"\n", 0, bad) + 1
    what = "a NUL byte" if bad == nul else f"byte 0x{data[bad]:02x}, not UTF-8"
    raise error_cls(f"not a text file: {what} at byte offset {bad}", name, line,
                    hint="is this the right file? YAML files must be UTF-8 text "
                         "(re-save it as UTF-8, e.g. iconv -t UTF-8)")


def load_yaml_string(text: str, name: str = "<string>",
                     error_cls: type[InventoryError] = InventoryError) -> Any:
    """Load one YAML document from a string; `name` is used in error messages."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(p for p in (e.context, e.problem) if p)
        raise error_cls(f"invalid YAML: {what}", name, mark.line + 1 if mark else None,
                        hint="check indentation and quoting around this line") from None
    except yaml.YAMLError as e:
        raise error_cls(f"invalid YAML: {e}", name) from None
    if node is None:
        return None
    return _Constructor(name, error_cls).construct(node)


class _Constructor:
    def __init__(self, file: str, error_cls: type[InventoryError]) -> None:
        self.file = file
        self.error_cls = error_cls
        # Aliases share the same node: build it once so anchors stay cheap, and
        # refuse recursive aliases (SafeLoader allows them) so nothing later loops.
        self.done: dict[int, Any] = {}
        self.building: set[int] = set()

    def fail(self, message: str, node: Node, hint: str | None = None) -> InventoryError:
        return self.error_cls(message, self.file, node.start_mark.line + 1, hint)

    def construct(self, node: Node) -> Any:
        if id(node) in self.done:
            return self.done[id(node)]
        if id(node) in self.building:
            raise self.fail("recursive YAML alias (an anchor that contains itself)", node)
        self.building.add(id(node))
        try:
            if isinstance(node, ScalarNode):
                value = self.scalar(node)
            elif isinstance(node, SequenceNode):
                value = self.sequence(node)
            else:
                value = self.mapping(cast(MappingNode, node))
        finally:
            self.building.discard(id(node))
        self.done[id(node)] = value
        return value

    def scalar(self, node: ScalarNode) -> Any:
        tag, text = node.tag, node.value
        if tag == _PLAIN:
            return resolve_plain(text)
        if tag == _STR:
            return text
        if tag == _SECRET:
            return Secret(text)
        if tag == _NULL:
            return None
        if tag == _BOOL:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            raise self.fail(f"!!bool value {text!r} is not true or false", node)
        if tag in (_INT, _FLOAT):
            value = resolve_plain(text)
            ok = isinstance(value, int) and not isinstance(value, bool)
            if tag == _FLOAT and ok:
                return float(value)
            if ok or (tag == _FLOAT and isinstance(value, float)):
                return value
            raise self.fail(f"{text!r} is not a decimal number", node,
                            hint="leading zeros and 0o/0x prefixes are not numbers in gpuprov; "
                                 "quote file modes, e.g. mode: \"0644\"")
        raise self.fail(f"unsupported YAML tag {tag!r}", node,
                        hint="only !secret and the standard !!str/!!int/!!float/!!bool/!!null "
                             "tags are understood")

    def sequence(self, node: SequenceNode) -> YamlList:
        if node.tag not in (_SEQ,):
            raise self.fail(f"unsupported YAML tag {node.tag!r} on a list", node)
        out = YamlList(file=self.file, line=node.start_mark.line + 1)
        for item in node.value:
            out.append(self.construct(item))
            out.item_lines.append(item.start_mark.line + 1)
        return out

    def mapping(self, node: MappingNode) -> YamlMap:
        if node.tag not in (_MAP,):
            raise self.fail(f"unsupported YAML tag {node.tag!r} on a mapping", node)
        out = YamlMap(file=self.file, line=node.start_mark.line + 1)
        merged: list[tuple[YamlMap, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag in (_MERGE,) or (key_node.tag == _PLAIN and key_node.value == "<<"):
                merged.extend(self.merge_sources(value_node, key_node))
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.fail("a mapping key must be a plain value, not a list or mapping",
                                key_node)
            key = self.construct(key_node)
            line = key_node.start_mark.line + 1
            if key in out.key_lines:
                raise self.fail(f"duplicate key {key!r} (first defined at line "
                                f"{out.key_lines[key]})", key_node,
                                hint="YAML keeps only the last one; remove or merge the two")
            out[key] = self.construct(value_node)
            out.key_lines[key] = line
        # Merge keys (<<: *defaults) never override keys written in this mapping.
        for source, _ in merged:
            for key, value in source.items():
                if key not in out:
                    out[key] = value
                    out.key_lines[key] = source.key_lines.get(key, out.line or 0)
        return out

    def merge_sources(self, node: Node, key_node: Node) -> list[tuple[YamlMap, Node]]:
        items = node.value if isinstance(node, SequenceNode) else [node]
        sources = []
        for item in items:
            value = self.construct(item)
            if not isinstance(value, YamlMap):
                # An alias points at the anchor's line; the '<<' line is the one to fix.
                raise self.fail("'<<' merge needs a mapping or a list of mappings", key_node)
            sources.append((value, item))
        return sources


def resolve_plain(text: str) -> Any:
    """Type of an unquoted scalar, with the YAML 1.1 surprises removed."""
    low = text.lower()
    if text in ("", "~") or low == "null":
        return None
    if low in ("true", "false"):
        return low == "true"
    if _INT_RE.fullmatch(text) and not text.endswith("_"):
        return int(text.replace("_", ""))
    if low in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[low]
    if _FLOAT_RE.fullmatch(text) and any(c.isdigit() for c in text):
        try:
            return float(text.replace("_", ""))
        except ValueError:
            return text
    return text


def _distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two neighbours as one edit (typos)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def close_names(word: str, candidates: Iterable[str], limit: int = 3,
                fuzzy: bool = True) -> list[str]:
    """Candidates that look like a typo of `word`, closest first (for did-you-mean).

    With fuzzy=False only near-exact typos count (one or two slipped keys), which
    is what a check that refuses a file may rely on without false alarms.
    """
    candidates = list(candidates)
    word_l = word.lower()
    scored = []
    for cand in dict.fromkeys(candidates):
        # Short names tolerate one slip, longer ones two; more is a different word.
        allowed = 1 if min(len(word), len(cand)) <= 8 else 2
        if abs(len(word) - len(cand)) > allowed:
            continue
        d = _distance(word_l, cand.lower())
        if d <= allowed:
            scored.append((d, cand))
    if not scored and fuzzy:
        scored = [(9, c) for c in difflib.get_close_matches(word, candidates, limit, 0.75)]
    return [c for _, c in sorted(scored, key=lambda t: t[0])][:limit]


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A hint string like "did you mean 'vars'?", or None."""
    names = close_names(word, candidates)
    if not names:
        return None
    return "did you mean " + " or ".join(repr(n) for n in names) + "?"


def kind_of(value: Any) -> str:
    """What a YAML value is, for "expected a mapping, got ..." messages."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"
