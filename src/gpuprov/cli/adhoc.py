"""`gpuprov run PATTERN -- COMMAND`: an ad-hoc command on the hosts a
pattern selects (`ansible PATTERN -a COMMAND`)."""

from __future__ import annotations

from typing import Any

import click

from gpuprov.cli.common import (
    become_pass_option,
    connect_options,
    forks_option,
    guarded,
    load_target,
    run_options,
    stderr,
)
from gpuprov.cli.exit_codes import epilog, host_code, worst
from gpuprov.engine.adhoc import AdhocResult, adhoc_command, run_adhoc
from gpuprov.output.adhoc import render_block, summary


def adhoc_exit_code(results: list[AdhocResult]) -> int:
    """0 every host ran it with rc 0; 2 it failed on a host (rc != 0, or it
    could not be run), which wins over 4: a host unreachable (cli/exit_codes.py)."""
    return worst(host_code(failed=r.failed, unreachable=r.unreachable is not None)
                 for r in results)


class _AdhocCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            # `gpuprov run lab ls -la`: -la was the command's, not ours
            raise click.UsageError(exc.message.rstrip(".") + ": put the command after -- "
                                   "(gpuprov run PATTERN -- COMMAND)", ctx) from None


@click.command("run", cls=_AdhocCommand, epilog=epilog("run"))
@click.argument("pattern")
@click.argument("command", nargs=-1, required=True)
# -i only: the positional argument is the pattern (common.inventory_argument has both)
@click.option("-i", "--inventory", metavar="INVENTORY", type=click.Path(dir_okay=False),
              help="The inventory file (default: ./inventory.yml, else this machine).")
@click.option("-b", "--become", is_flag=True,
              help="Run the command as root (sudo; -K for a password). A host whose "
                   "inventory says become: false runs it as its login user.")
@become_pass_option
@forks_option
@connect_options
@guarded
def adhoc(**opts: Any) -> int:
    """Run COMMAND on the hosts PATTERN selects and print a block per host
    ("HOST | rc=N >>", then its stdout and stderr), in inventory order.

    \b
    gpuprov run lab -- nvidia-smi -L
    gpuprov run 'lab:!lab-03' -b -- 'systemctl restart docker && docker info'

    Put the command after `--`. Several words are a program and its arguments
    (each quoted, nothing re-read by a shell); ONE word is a shell line, run
    by `sh -c` (pipes, globs and $VARS work). Output is masked for the hosts'
    secret variables and the -K password.

    No run lock is taken: the command may run while an `apply` changes the
    same host (the lock keeps gpuprov's own runs apart, see the README's
    "One run per host"); gpuprov changes nothing here except what the
    command does.
    """
    command = adhoc_command(opts["command"])
    target = load_target(opts["inventory"], opts["pattern"], None, need_plays=False)
    options = run_options({**opts, "tags": (), "skip_tags": (), "extra_vars": ()}, check=False,
                          hosts=len(target.hosts))
    results: list[AdhocResult] = []
    for result in run_adhoc(target.hosts, command, become=opts["become"], forks=options.forks,
                            connect=options.connect):
        results.append(result)
        click.echo(render_block(result), nl=False)
    stderr().print(summary(results), markup=False)
    return adhoc_exit_code(results)
