# TEST DOUBLE for gpuprov's test fleet: a tiny Go-template subset for `docker --format`.
# Never install on real hosts.
"""Supports {{.A.B}}, {{json .X}}, {{json .}}, {{index .X 0}}, {{index $ "K" "L"}},
{{join .X ","}}, {{lower .X}}/{{upper .X}}, parenthesized calls, `$`, and
{{if X}}/{{with X}} ... {{else}} ... {{end}}: what provisioning code realistically sends.

Like Go's text/template: `index` of a map key that is not there is the zero value
(nil, printed "<no value>", json "null"), while `.Key` of a missing key is an error
(docker runs templates on its raw JSON with missingkey=error); `with` and `if`
take false, 0, nil and empty strings, lists and maps as false."""

from __future__ import annotations

import json
import re
from typing import Any

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)


class TemplateError(Exception):
    pass


def go_string(value: Any) -> str:
    """How Go's text/template prints a value."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_string(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _truth(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (
        isinstance(value, (list, dict)) and not value)


def _lookup(path: str, dot: Any, root: Any) -> Any:
    if path in (".", "$"):
        return dot if path == "." else root
    if path.startswith("$."):
        value, parts = root, path[2:].split(".")
    elif path.startswith("."):
        value, parts = dot, path[1:].split(".")
    else:
        try:
            return json.loads(path)
        except json.JSONDecodeError as err:
            raise TemplateError(f'function "{path}" not defined') from err
    for part in parts:
        if not isinstance(value, dict):
            raise TemplateError(f"can't evaluate field {part}")
        if part not in value:
            raise TemplateError(f'map has no entry for key "{part}"')
        value = value[part]
    return value


class Literal(str):
    """A quoted string in a template: a value, never a field or a function."""


def _words(expr: str) -> list[Any]:
    """Split an expression into words; a parenthesized call becomes a nested list,
    a quoted string a Literal."""
    out: list[Any] = []
    stack: list[list[Any]] = [out]
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch == "(":
            stack.append([])
            i += 1
        elif ch == ")":
            if len(stack) == 1:
                raise TemplateError("unexpected right paren")
            inner = stack.pop()
            stack[-1].append(inner)
            i += 1
        elif ch in "\"`":
            close = expr.find(ch, i + 1) if ch == "`" else _closing_quote(expr, i)
            if close < 0:
                raise TemplateError("unterminated quoted string")
            text = expr[i + 1:close] if ch == "`" else json.loads(expr[i:close + 1])
            stack[-1].append(Literal(text))
            i = close + 1
        else:
            j = i
            while j < len(expr) and not expr[j].isspace() and expr[j] not in "()":
                j += 1
            stack[-1].append(expr[i:j])
            i = j
    if len(stack) != 1:
        raise TemplateError("unclosed left paren")
    return out


def _closing_quote(expr: str, start: int) -> int:
    i = start + 1
    while i < len(expr):
        if expr[i] == "\\":
            i += 2
        elif expr[i] == '"':
            return i
        else:
            i += 1
    return -1


def _arg(word: Any, dot: Any, root: Any) -> Any:
    if isinstance(word, Literal):
        return str(word)
    if isinstance(word, list):
        return _call(word, dot, root)
    return _lookup(word, dot, root)


def _index(container: Any, keys: list[Any]) -> Any:
    for key in keys:
        if container is None:
            raise TemplateError("error calling index: index of untyped nil")
        if isinstance(container, dict):
            container = container.get(key if isinstance(key, str) else str(key))
        elif isinstance(container, list):
            try:
                container = container[int(key)]
            except (IndexError, ValueError) as err:
                raise TemplateError(f"error calling index: index out of range: {key}") from err
        else:
            raise TemplateError(f"error calling index: can't index item of type "
                                f"{type(container).__name__}")
    return container


def _call(words: list[Any], dot: Any, root: Any) -> Any:
    if not words:
        raise TemplateError("missing value for command")
    func, args = words[0], words[1:]
    if isinstance(func, Literal):
        if args:
            raise TemplateError("can't give argument to non-function")
        return str(func)
    if isinstance(func, list):
        if args:
            raise TemplateError("can't give argument to non-function")
        return _call(func, dot, root)
    values = [_arg(a, dot, root) for a in args]
    if func == "json" and len(values) == 1:
        return json.dumps(values[0], separators=(",", ":"))
    if func == "index" and values:
        return _index(values[0], values[1:])
    if func == "join" and len(values) == 2:
        return str(values[1]).join(go_string(v) for v in values[0] or [])
    if func in ("lower", "upper") and len(values) == 1:
        text = go_string(values[0])
        return text.lower() if func == "lower" else text.upper()
    if not args:
        return _lookup(func, dot, root)
    raise TemplateError(f'function "{func}" not defined')


def _parse(template: str) -> list[Any]:
    """Nodes: text strings, ("expr", words) and ("if"|"with", words, then, else)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    for match in ACTION.finditer(template):
        text = template[pos:match.start()]
        if match.group(1):
            text = text.rstrip()
        tokens.append(("text", text))
        tokens.append(("action", match.group(2)))
        pos = match.end()
        if match.group(3):
            while pos < len(template) and template[pos].isspace():
                pos += 1
    tokens.append(("text", template[pos:]))
    nodes, rest, end = _nodes(tokens)
    if end is not None or rest:
        raise TemplateError(f"unexpected {{{{{end}}}}}")
    return nodes


def _nodes(tokens: list[tuple[str, str]]) -> tuple[list[Any], list[tuple[str, str]], str | None]:
    """Nodes up to an {{else}} or {{end}}, the tokens after it, and which ended them."""
    nodes: list[Any] = []
    while tokens:
        kind, value = tokens[0]
        tokens = tokens[1:]
        if kind == "text":
            nodes.append(value)
            continue
        head = value.split(None, 1)
        if value in ("else", "end"):
            return nodes, tokens, value
        if head and head[0] in ("if", "with"):
            if len(head) < 2:
                raise TemplateError(f"missing value for {head[0]}")
            then, tokens, ended = _nodes(tokens)
            other: list[Any] = []
            if ended == "else":
                other, tokens, ended = _nodes(tokens)
            if ended != "end":
                raise TemplateError(f"unexpected EOF in {head[0]}")
            nodes.append((head[0], _words(head[1]), then, other))
        else:
            nodes.append(("expr", _words(value)))
    return nodes, tokens, None


def _execute(nodes: list[Any], dot: Any, root: Any) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "expr":
            out.append(go_string(_call(node[1], dot, root)))
        else:
            kind, words, then, other = node
            value = _call(words, dot, root)
            if _truth(value):
                out.append(_execute(then, value if kind == "with" else dot, root))
            else:
                out.append(_execute(other, dot, root))
    return "".join(out)


def render(template: str, obj: Any) -> str:
    """Render one object; docker prints a newline after each rendered object."""
    return _execute(_parse(template.replace("\\n", "\n").replace("\\t", "\t")), obj, obj)
