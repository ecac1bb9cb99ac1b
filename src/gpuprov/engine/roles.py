"""A role on disk: defaults.yml, tasks.py (Python), templates/, files/.

tasks.py defines `tasks(ctx)` yielding ops in order, and optionally
`HANDLERS = {"restart docker": lambda ctx: [service("docker", state="restarted")]}`.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from gpuprov.errors import PlaybookError
from gpuprov.model.playbook import load_role_defaults
from gpuprov.ops.base import Op

TasksFn = Callable[[Any], Iterable[Op]]
HandlerFn = Callable[[Any], Iterable[Op]]


@dataclass
class Role:
    name: str
    path: Path
    defaults: dict[str, Any]
    tasks: TasksFn
    handlers: dict[str, HandlerFn] = field(default_factory=dict)


_cache: dict[Path, Role] = {}


def load_role(name: str, path: Path) -> Role:
    """Import a role once per process (roles are shared by every host)."""
    path = path.resolve()
    if path in _cache:
        return _cache[path]
    tasks_file = path / "tasks.py"
    if not tasks_file.is_file():
        raise PlaybookError(f"role {name} has no tasks.py", str(path))
    module = _import(name, tasks_file)
    tasks = getattr(module, "tasks", None)
    if not callable(tasks):
        raise PlaybookError("a role's tasks.py must define tasks(ctx)", str(tasks_file))
    handlers = getattr(module, "HANDLERS", {})
    if not isinstance(handlers, dict):
        raise PlaybookError("HANDLERS must be a dict of name -> function(ctx)", str(tasks_file))
    role = Role(name, path, load_role_defaults(path), tasks, dict(handlers))
    _cache[path] = role
    return role


def _import(name: str, tasks_file: Path) -> ModuleType:
    module_name = f"gpuprov_role_{name}_{abs(hash(str(tasks_file)))}"
    spec = importlib.util.spec_from_file_location(module_name, tasks_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        # A broken role is the role author's bug: show where, not our stack.
        frames = traceback.extract_tb(exc.__traceback__)
        line = next((f.lineno for f in reversed(frames) if f.filename == str(tasks_file)), None)
        raise PlaybookError(f"cannot load role {name}: {type(exc).__name__}: {exc}",
                            str(tasks_file), line) from exc
    return module
