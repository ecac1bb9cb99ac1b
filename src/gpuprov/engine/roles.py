"""A role on disk: defaults.yml, tasks.py (Python), its own modules, templates/, files/.

tasks.py defines `tasks(ctx)` yielding ops in order, and optionally
`HANDLERS = {"restart docker": lambda ctx: [service("docker", state="restarted")]}`.

A role directory is imported as a package (an `__init__.py` is optional), so
tasks.py can import the role's own modules relatively (`from .settings import
Settings`). Each role path gets its own synthetic package name: two roles with
a `settings.py` each, or a ./roles copy shadowing a bundled role, never share
a module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import re
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

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    module = load_role_module(name, path, "tasks")
    tasks = getattr(module, "tasks", None)
    if not callable(tasks):
        raise PlaybookError("a role's tasks.py must define tasks(ctx)", str(tasks_file))
    handlers = getattr(module, "HANDLERS", {})
    if not isinstance(handlers, dict):
        raise PlaybookError("HANDLERS must be a dict of name -> function(ctx)", str(tasks_file))
    role = Role(name, path, load_role_defaults(path), tasks, dict(handlers))
    _cache[path] = role
    return role


def load_role_module(name: str, path: Path, module: str) -> ModuleType:
    """roles/<name>/<module>.py, imported as a module of the role's package
    (once per process: the role's tasks.py and its other users share it).

    A broken module, or a module of the role that it imports, is a
    PlaybookError naming the role's file:line where it broke.
    """
    if not all(_MODULE_NAME.fullmatch(part) for part in module.split(".")):
        raise ValueError(f"not a module name: {module!r}")
    path = path.resolve()
    package = _package(name, path)
    # A module that fails is dropped from sys.modules by the import system itself.
    return _guarded(name, path, path / f"{module.replace('.', '/')}.py",
                    lambda: importlib.import_module(f"{package}.{module}"))


def role_package_name(path: Path) -> str:
    """The synthetic package name a role directory is imported under."""
    path = path.resolve()
    safe = re.sub(r"\W", "_", path.name)
    # a digest of the path, not hash(): the same name in every process
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return f"gpuprov_role_{safe}_{digest}"


def _package(name: str, path: Path) -> str:
    """Import (once) the package for the role at `path`; returns its name."""
    package = role_package_name(path)
    if package in sys.modules:
        return package
    init = path / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            package, init, submodule_search_locations=[str(path)])
    else:
        # no __init__.py: an empty package whose modules are found in the role directory
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(path)]
    assert spec is not None
    # the directory may have changed since the import system last listed it
    importlib.invalidate_caches()
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module

    def run_init() -> ModuleType:
        try:
            if spec.loader is not None:
                spec.loader.exec_module(module)
        except BaseException:
            # a half-imported package must not be found by the next attempt
            for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
                del sys.modules[key]
            raise
        return module

    _guarded(name, path, init, run_init)
    return package


def _guarded(name: str, path: Path, file: Path, load: Callable[[], ModuleType]) -> ModuleType:
    """Run `load`; any error becomes a PlaybookError naming the role's file:line
    (`file` when no line of the role's own code is in the traceback)."""
    try:
        return load()
    except Exception as exc:
        # A broken role is the role author's bug: show where, not our stack.
        where, line = _where_loading(exc, path)
        raise PlaybookError(f"cannot load role {name}: {type(exc).__name__}: {exc}",
                            where or str(file), line) from exc


def _where_loading(exc: BaseException, path: Path) -> tuple[str | None, int | None]:
    """The innermost file:line of the role's own code in the traceback (a
    module of the role that tasks.py imports counts); (None, None) if none."""
    inside = str(path) + "/"
    if isinstance(exc, SyntaxError) and exc.filename and exc.filename.startswith(inside):
        return exc.filename, exc.lineno   # no frame runs the file that does not compile
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename.startswith(inside)]
    if frames:
        return frames[-1].filename, frames[-1].lineno
    return None, None
