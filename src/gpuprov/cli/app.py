"""The `gpuprov` command group and its entry point: click's usage errors
exit 1, never 2 (which means 'a task failed')."""

from __future__ import annotations

import sys

import click

from gpuprov import __version__
from gpuprov.cli import adhoc, facts, info, onboard, run, verify
from gpuprov.cli.common import stderr
from gpuprov.cli.exit_codes import EXIT_ERROR, EXIT_OK
from gpuprov.cli.role_commands import RoleCommandGroup


# Roles add their own commands (a role's commands.py): see cli/role_commands.py.
@click.group(cls=RoleCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpuprov")
def cli() -> None:
    """Provision GPU deep-learning hosts over SSH: NVIDIA driver, container
    toolkit, image, hardened access. Without INVENTORY: ./inventory.yml, else
    this machine."""


for command in (run.apply, run.drift_check, verify.verify, onboard.onboard, facts.facts,
                info.inventory_cmd, adhoc.adhoc):
    cli.add_command(command)


def main() -> None:
    """Entry point: click's usage errors exit 1 (not 2, which means 'a task failed')."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        stderr().print("aborted")
        code = EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        code = EXIT_ERROR
    except KeyboardInterrupt:
        stderr().print("interrupted")
        code = 130
    sys.exit(code if isinstance(code, int) else EXIT_OK)
