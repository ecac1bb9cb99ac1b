# TEST DOUBLE for gpuprov's test fleet: a tiny Go-template subset for `docker --format`.
# Never install on real hosts.
"""Supports {{.A.B}}, {{json .X}}, {{json .}}, {{index .X 0}}, {{join .X ","}} and
{{lower .X}}/{{upper .X}}: what provisioning code realistically sends."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


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


def _lookup(obj: Any, path: str) -> Any:
    if path == ".":
        return obj
    if not path.startswith("."):
        try:
            return json.loads(path)
        except json.JSONDecodeError as err:
            raise TemplateError(f'function "{path}" not defined') from err
    value = obj
    for part in path[1:].split("."):
        if not isinstance(value, dict) or part not in value:
            raise TemplateError(f"can't evaluate field {part}")
        value = value[part]
    return value


def _evaluate(expr: str, obj: Any) -> Any:
    words = shlex.split(expr)
    if not words:
        raise TemplateError("missing value for command")
    func, args = words[0], words[1:]
    if func == "json" and len(args) == 1:
        return json.dumps(_lookup(obj, args[0]), separators=(",", ":"))
    if func == "index" and len(args) == 2:
        container = _lookup(obj, args[0])
        key: Any = int(args[1]) if args[1].isdigit() else args[1]
        try:
            return container[key]
        except (IndexError, KeyError, TypeError) as err:
            raise TemplateError(f"error calling index: {err}") from err
    if func == "join" and len(args) == 2:
        return args[1].join(go_string(v) for v in _lookup(obj, args[0]) or [])
    if func in ("lower", "upper") and len(args) == 1:
        text = go_string(_lookup(obj, args[0]))
        return text.lower() if func == "lower" else text.upper()
    if len(words) == 1:
        return _lookup(obj, func)
    raise TemplateError(f'function "{func}" not defined')


def render(template: str, obj: Any) -> str:
    """Render one object; docker prints a newline after each rendered object."""
    def action(match: re.Match[str]) -> str:
        return go_string(_evaluate(match.group(1), obj))

    return ACTION.sub(action, template.replace("\\n", "\n").replace("\\t", "\t"))
