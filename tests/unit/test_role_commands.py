"""Roles add their own `gpuprov` commands (a role's commands.py, COMMANDS =
[click commands]), found on the role search path when a name is not built
in and listed in --help; a broken one is a warning, not a broken CLI; and
host_notes() is what `gpuprov onboard` ends with for a host."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import click
import pytest

from gpuprov.cli import role_commands as rc
from gpuprov.cli.app import cli
from gpuprov.model.inventory import Inventory
from gpuprov.model.playbook import Play, RoleRef
from tests.unit.cli_runner import gpuprov

HELLO = """\
    import click

    from .words import GREETING


    @click.command("hello")
    @click.argument("name")
    def hello(name):
        \"\"\"Say hello from the greet role.\"\"\"
        click.echo(f"{GREETING}, {name}")


    @click.command("apply")
    def not_the_real_apply():
        \"\"\"A role cannot replace a built-in command.\"\"\"
        click.echo("role apply")


    COMMANDS = [hello, not_the_real_apply]


    def host_notes(inventory, host):
        return f"greet: {GREETING} from {host}"
    """


def role(root: Path, name: str, files: dict[str, str]) -> Path:
    path = root / "roles" / name
    path.mkdir(parents=True)
    (path / "tasks.py").write_text("def tasks(ctx):\n    return []\n")
    for file_name, text in files.items():
        (path / file_name).write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with ./roles, the first entry of the role search path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_help_lists_the_bundled_roles_commands_with_the_built_in_ones(project: Path) -> None:
    code, out, err = gpuprov("--help")
    assert (code, err) == (0, "")
    # one name per command; a long description goes on over indented lines
    section = out.split("Commands:\n")[1].split("\n\n")[0]
    listed = [line.split()[0] for line in section.splitlines() if re.match(r"  \S", line)]
    assert listed == sorted(listed)
    assert {"apply", "drift-check", "verify", "onboard", "jupyter-url"} <= set(listed)
    assert "  jupyter-url  How a researcher reaches JupyterLab on HOST" in out


def test_a_role_in_roles_adds_a_command_that_imports_its_own_modules(project: Path) -> None:
    role(project, "greet", {"commands.py": HELLO, "words.py": 'GREETING = "hi"\n'})
    assert gpuprov("hello", "alice")[:2] == (0, "hi, alice\n")
    code, out, _ = gpuprov("--help")
    assert code == 0 and "  hello " in out and "Say hello from the greet role." in out
    # built-ins win their names: the role's `apply` is never used
    assert rc.role_commands()["apply"].callback.__name__ == "not_the_real_apply"
    assert cli.get_command(click.Context(cli), "apply").callback.__module__ == "gpuprov.cli.run"
    # bundled role commands still come along
    assert "jupyter-url" in rc.role_commands()


def test_a_built_in_command_never_imports_a_role(project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def scan(*args: object) -> dict[str, click.Command]:
        raise AssertionError("roles scanned for a built-in command")
    monkeypatch.setattr(rc, "role_commands", scan)
    assert cli.get_command(click.Context(cli), "drift-check") is not None


def test_a_broken_commands_py_is_a_warning_naming_its_line(project: Path) -> None:
    role(project, "broken", {"commands.py": "import click\n\nCOMMANDS = [click.nope]\n"})
    role(project, "odd", {"commands.py": "COMMANDS = ['not a command']\n"})
    code, out, err = gpuprov("--help")
    assert code == 0 and "jupyter-url" in out
    commands = project.resolve() / "roles" / "broken" / "commands.py"
    assert f"warning: {commands}:3: cannot load role broken: AttributeError" in err
    assert "(its commands are left out)" in err
    assert "roles/odd/commands.py: COMMANDS must be a list of click commands" in err
    code, _, err = gpuprov("no-such-command")
    assert code == 1 and "No such command 'no-such-command'" in err


def test_host_notes_come_from_the_plays_roles_once_each_in_order(project: Path) -> None:
    greet = role(project, "greet", {"commands.py": HELLO, "words.py": 'GREETING = "hi"\n'})
    plain = role(project, "plain", {})
    plays = [Play("one", "all", [RoleRef("plain", path=plain), RoleRef("greet", path=greet)]),
             Play("two", "all", [RoleRef("greet", path=greet)])]
    assert rc.role_host_notes(plays, Inventory.local(), "ws-01") == ["greet: hi from ws-01"]


def test_the_bundled_jupyter_role_notes_how_to_reach_it_or_why_not(project: Path) -> None:
    inventory = project / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    gpu-01:\n      ansible_user: admin\n"
                         "    gpu-02:\n      jupyter_enabled: false\n")
    bundled = Path(__file__).resolve().parents[2] / "roles" / "jupyter"
    plays = [Play("Jupyter", "all", [RoleRef("jupyter", path=bundled)])]
    inv = Inventory.load(inventory)
    [note] = rc.role_host_notes(plays, inv, "gpu-01")
    assert note.startswith("JupyterLab on gpu-01:\n1. Open a tunnel")
    assert rc.role_host_notes(plays, inv, "gpu-02") == [
        "Jupyter: gpu-02: Jupyter is disabled there (jupyter_enabled: false)"]
