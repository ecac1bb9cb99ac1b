"""The `gpuprov` command group and its entry point: click's usage errors
exit 1, never 2 (which means 'a task failed')."""

from __future__ import annotations

import platform
import sys

import click
import paramiko

from gpuprov import __version__
from gpuprov.cli import adhoc, facts, handoff, info, onboard, pull, run, status, verify
from gpuprov.cli.common import stderr
from gpuprov.cli.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK
from gpuprov.cli.role_commands import RoleCommandGroup


class GpuprovGroup(RoleCommandGroup):
    """The group whose --help shows each command's whole first paragraph:
    click cuts a description to what fits one line, mid-sentence."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.short_help or first_paragraph(command.help or "")))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def first_paragraph(text: str) -> str:
    """A docstring's first paragraph as one line (a command's description)."""
    return " ".join(text.strip().split("\n\n")[0].split())


def version_message() -> str:
    """--version: gpuprov's and what bug reports need besides (Python, paramiko)."""
    return (f"gpuprov {__version__} (Python {platform.python_version()}, "
            f"paramiko {paramiko.__version__})")


# Roles add their own commands (a role's commands.py): see cli/role_commands.py.
@click.group(cls=GpuprovGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Shell completion (bash): eval \"$(_GPUPROV_COMPLETE=bash_source "
                    "gpuprov)\"; zsh_source and fish_source for zsh and fish.")
@click.version_option(__version__, prog_name="gpuprov", message=version_message())
def cli() -> None:
    """Provision GPU deep-learning hosts over SSH: NVIDIA driver, container
    toolkit, image, hardened access. Without INVENTORY: ./inventory.yml, else
    this machine."""


for command in (run.apply, run.drift_check, verify.verify, onboard.onboard, facts.facts,
                info.inventory_cmd, adhoc.adhoc, status.status, handoff.k8s_handoff,
                pull.pull):
    cli.add_command(command)


def main() -> None:
    """Entry point: click's usage errors exit 1 (not 2, which means 'a task failed')."""
    try:
        # prog_name: `python -m gpuprov.cli` completes and reads _GPUPROV_COMPLETE too
        code = cli.main(prog_name="gpuprov", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort: still "interrupted" (130), as a shell says
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        stderr().print("interrupted" if interrupted else "aborted")
        code = EXIT_INTERRUPTED if interrupted else EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        code = EXIT_ERROR
    except KeyboardInterrupt:
        stderr().print("interrupted")
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)
