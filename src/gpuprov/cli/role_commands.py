"""Commands that roles add to `gpuprov`, so a role owns its whole feature,
its own commands included, and the core names no role.

Roles stay below the cli (they never import it): a role's command raises
GpuprovError like any other code, and this group prints it the way the
built-in commands do (`guarded`: one message, exit 1).

A role's `commands.py` defines `COMMANDS = [click commands]` and, optionally,
`host_notes(inventory, host) -> str | None`: what `gpuprov onboard` prints
at the end for a host the role was applied to. The module is imported
through the engine's role loader (the role's package: relative imports of
its own modules work), and only when needed: a command name that is not
built in, `--help`, or the end of an onboarding. Roles are searched like
playbooks' roles (./roles, then the bundled ones); built-in commands, then
the first role on the search path, win a name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import click
from rich.markup import escape

from gpuprov.cli.common import guarded, stderr
from gpuprov.engine.roles import load_role_module
from gpuprov.errors import GpuprovError
from gpuprov.model.inventory import Inventory
from gpuprov.model.paths import bundled_dir
from gpuprov.model.playbook import Play, role_search_path

COMMANDS_MODULE = "commands"


class RoleCommandGroup(click.Group):
    """A click group that also offers the commands of the roles on the search path."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *role_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # built-ins first: `gpuprov apply` never imports a role's commands
        return super().get_command(ctx, cmd_name) or role_commands().get(cmd_name)


def role_commands(search_path: Sequence[Path] | None = None) -> dict[str, click.Command]:
    """Every role command on the search path, by name (the first role wins)."""
    if search_path is None:
        search_path = role_search_path(None, bundled_dir("roles"))
    found: dict[str, click.Command] = {}
    for directory in search_path:
        if not directory.is_dir():
            continue
        for role_dir in sorted(directory.iterdir()):
            if role_dir.name.startswith((".", "_")):
                continue
            module = _commands_module(role_dir.name, role_dir)
            for command in _commands_of(module, role_dir):
                if command.name is not None:
                    found.setdefault(command.name, _guard(command))
    return found


def _guard(command: click.Command) -> click.Command:
    """The command, its errors printed like a built-in command's (once per
    command object: role modules are imported once per process)."""
    if command.callback is not None and not getattr(command.callback, "_gpuprov_guarded",
                                                    False):
        callback = guarded(command.callback)
        callback._gpuprov_guarded = True  # type: ignore[attr-defined]
        command.callback = callback
    return command


def role_host_notes(plays: Sequence[Play], inventory: Inventory, host: str) -> list[str]:
    """What the roles of `plays` have to tell a person about `host` (host_notes
    of their commands.py), in play order."""
    notes: list[str] = []
    seen: set[Path] = set()
    for play in plays:
        for ref in play.roles:
            if ref.path is None or ref.path in seen:
                continue
            seen.add(ref.path)
            module = _commands_module(ref.name, ref.path)
            notes_of = getattr(module, "host_notes", None)
            if callable(notes_of) and (text := notes_of(inventory, host)):
                notes.append(str(text))
    return notes


def _commands_module(name: str, role_dir: Path) -> ModuleType | None:
    if not (role_dir / f"{COMMANDS_MODULE}.py").is_file():
        return None
    try:
        return load_role_module(name, role_dir, COMMANDS_MODULE)
    except GpuprovError as exc:
        # One broken role must not take `gpuprov --help` (or another
        # role's command) down with it: say so and go on without it.
        _warn(f"{exc} (its commands are left out)")
        return None


def _commands_of(module: ModuleType | None, role_dir: Path) -> list[click.Command]:
    if module is None:
        return []
    commands = getattr(module, "COMMANDS", [])
    if not isinstance(commands, (list, tuple)) or not all(
            isinstance(c, click.Command) for c in commands):
        _warn(f"{role_dir / (COMMANDS_MODULE + '.py')}: COMMANDS must be a list of click "
              "commands; left out")
        return []
    return list(commands)


def _warn(text: str) -> None:
    stderr().print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)
