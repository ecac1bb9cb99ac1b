"""Roles load as packages: tasks.py imports the role's own modules relatively,
an optional __init__.py runs first, a broken module of the role is a
PlaybookError naming its file:line, and two roles with a module of the same
name each get their own."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpuprov.engine.roles import load_role, load_role_module
from gpuprov.errors import PlaybookError


def make_role(root: Path, name: str, files: dict[str, str]) -> Path:
    path = root / name
    path.mkdir(parents=True)
    for file_name, text in files.items():
        (path / file_name).write_text(textwrap.dedent(text))
    return path


TASKS = """\
    from . import lockout
    from .settings import GREETING


    def tasks(ctx):
        return [GREETING, lockout.risk()]


    HANDLERS = {"noop": lambda ctx: []}
    """


def test_tasks_imports_the_roles_own_modules_relatively(tmp_path: Path) -> None:
    path = make_role(tmp_path, "greet", {
        "tasks.py": TASKS,
        "settings.py": 'GREETING = "hello"\n',
        "lockout.py": "def risk():\n    return 'none'\n"})
    role = load_role("greet", path)
    assert list(role.tasks(None)) == ["hello", "none"]
    assert list(role.handlers) == ["noop"]
    assert load_role("greet", path) is role                       # once per process
    # the harness and role commands get the very module tasks.py imported
    settings = load_role_module("greet", path, "settings")
    assert settings.GREETING == "hello"
    assert role.tasks.__globals__["GREETING"] is settings.GREETING
    assert role.tasks.__globals__["lockout"] is load_role_module("greet", path, "lockout")


def test_an_init_py_is_optional_and_runs_first(tmp_path: Path) -> None:
    path = make_role(tmp_path, "greet", {
        "__init__.py": 'PREFIX = "from init"\n',
        "tasks.py": "from . import PREFIX\n\n\ndef tasks(ctx):\n    return [PREFIX]\n"})
    assert list(load_role("greet", path).tasks(None)) == ["from init"]


def test_two_roles_with_a_module_of_the_same_name_do_not_collide(tmp_path: Path) -> None:
    tasks = "from .settings import VALUE\n\n\ndef tasks(ctx):\n    return [VALUE]\n"
    one = make_role(tmp_path / "a", "one", {"tasks.py": tasks, "settings.py": "VALUE = 1\n"})
    two = make_role(tmp_path / "b", "two", {"tasks.py": tasks, "settings.py": "VALUE = 2\n"})
    # the same role name on two search-path entries (./roles over the bundled copy) too
    three = make_role(tmp_path / "c", "one", {"tasks.py": tasks, "settings.py": "VALUE = 3\n"})
    assert [list(load_role(p.name, p).tasks(None)) for p in (one, two, three)] == [[1], [2], [3]]
    assert load_role_module("one", one, "settings") is not load_role_module("one", three,
                                                                             "settings")


HELPER_RAISES = """\
    LIMITS = {"gpus": 2}
    MAX_GPUS = LIMITS["gpu"]
    """


def test_an_error_in_a_helper_module_names_the_helpers_file_and_line(tmp_path: Path) -> None:
    path = make_role(tmp_path, "broken", {"tasks.py": TASKS.replace("lockout", "limits"),
                                          "limits.py": HELPER_RAISES,
                                          "settings.py": "GREETING = 1\n"})
    with pytest.raises(PlaybookError) as info:
        load_role("broken", path)
    assert info.value.file == str(path.resolve() / "limits.py") and info.value.line == 2
    assert str(info.value).startswith(f"{path.resolve()}/limits.py:2: cannot load role broken: "
                                      "KeyError: 'gpu'")
    # nothing half-imported is left behind: the next attempt says the same
    with pytest.raises(PlaybookError) as again:
        load_role("broken", path)
    assert str(again.value) == str(info.value)


def test_a_syntax_error_in_a_helper_module_names_its_file_and_line(tmp_path: Path) -> None:
    path = make_role(tmp_path, "broken", {"tasks.py": TASKS,
                                          "settings.py": "GREETING = 1\n",
                                          "lockout.py": "def risk(:\n    pass\n"})
    with pytest.raises(PlaybookError, match="cannot load role broken: SyntaxError") as info:
        load_role("broken", path)
    assert (info.value.file, info.value.line) == (str(path.resolve() / "lockout.py"), 1)


def test_an_error_in_tasks_py_itself_names_tasks_py(tmp_path: Path) -> None:
    path = make_role(tmp_path, "broken", {"tasks.py": "import os\nos.no_such_thing\n"})
    with pytest.raises(PlaybookError, match="AttributeError") as info:
        load_role("broken", path)
    assert (info.value.file, info.value.line) == (str(path.resolve() / "tasks.py"), 2)


def test_a_broken_init_py_is_named_and_not_half_imported(tmp_path: Path) -> None:
    path = make_role(tmp_path, "broken", {"__init__.py": "1 / 0\n",
                                          "tasks.py": "def tasks(ctx):\n    return []\n"})
    for _ in range(2):
        with pytest.raises(PlaybookError, match="ZeroDivisionError") as info:
            load_role("broken", path)
        assert (info.value.file, info.value.line) == (str(path.resolve() / "__init__.py"), 1)


def test_a_missing_module_is_named(tmp_path: Path) -> None:
    path = make_role(tmp_path, "greet", {"tasks.py": "def tasks(ctx):\n    return []\n"})
    with pytest.raises(PlaybookError, match="ModuleNotFoundError") as info:
        load_role_module("greet", path, "commands")
    assert info.value.file == str(path.resolve() / "commands.py")
