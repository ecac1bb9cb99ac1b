"""`gpuprov pull-setup`: push once, then the hosts pull (pull mode).

Runs the bundled playbook pull-setup.yml (the pull role) over SSH, with the
wheels gpuprov installs on each host made here first: repacked from this
controller's own Python, or the operator's --wheelhouse DIR (for hosts with
another Python version or architecture).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from gpuprov.cli.common import (
    become_pass_option,
    connect_options,
    forks_option,
    guarded,
    inventory_argument,
    load_target,
    lock_timeout_option,
    run_options,
    stderr,
    stdout,
)
from gpuprov.cli.exit_codes import apply_outcome, epilog
from gpuprov.engine.executor import Executor
from gpuprov.engine.wheelhouse import Wheelhouse, gpuprov_wheelhouse
from gpuprov.model.playbook import load_named_plays
from gpuprov.output.progress import Progress
from gpuprov.output.report import render_diffs, render_recap
from gpuprov.output.summary import header_line

PLAYBOOK = "pull-setup.yml"


@click.command("pull-setup", epilog=epilog("pull-setup"))
@inventory_argument
@click.option("-l", "--limit", help="Host pattern: names, globs, groups, a:b, a:&b, a:!b.")
@click.option("-e", "--extra-vars", multiple=True,
              help="k=v, @file.yml or a YAML mapping, e.g. pull_interval=600.")
@click.option("--wheelhouse", type=click.Path(file_okay=False, exists=True),
              help="Install gpuprov from the wheels in DIR (gpuprov's own and its "
              "requirements, e.g. `pip download` for the hosts' Python and architecture) "
              "instead of those repacked from this machine's Python.")
@click.option("-C", "--check", is_flag=True, help="Compute every change, run none of them.")
@click.option("-D", "--diff", is_flag=True,
              help="Show a unified diff per changed file (secrets and wheels never shown).")
@forks_option
@connect_options
@become_pass_option
@lock_timeout_option
@click.option("-v", "--verbose", count=True, help="More detail, as for apply.")
@guarded
def pull_setup(**opts: Any) -> int:
    """Set hosts up to converge themselves from a git repository (pull mode):
    gpuprov in a venv (/opt/gpuprov), /etc/gpuprov/pull.yml and a timer (or
    cron entry) that runs `gpuprov pull`."""
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    plays = load_named_plays(PLAYBOOK)
    options = run_options({**opts, "tags": (), "skip_tags": ()}, check=opts["check"],
                          hosts=len(target.hosts))
    console = stdout()
    with tempfile.TemporaryDirectory(prefix="gpuprov-wheels-") as work:
        if opts["wheelhouse"]:
            house, repacked = Wheelhouse.read(Path(opts["wheelhouse"])), False
        else:
            if opts["verbose"]:
                stderr().print("repacking gpuprov and its requirements from this Python",
                               highlight=False, markup=False)
            house, repacked = gpuprov_wheelhouse(Path(work)), True
        # above the inventory's and -e's: the wheels are this run's, not a setting
        options.extra_vars = {**options.extra_vars, "pull_wheelhouse": str(house.directory),
                              "pull_wheelhouse_repacked": repacked}
        executor = Executor(target.inventory, plays, target.hosts, options)
        name = "pull-setup --check" if opts["check"] else "pull-setup"
        console.print(header_line(name, PLAYBOOK, ["pull"], [], [], len(target.hosts))
                      + f" (gpuprov {house.version})", soft_wrap=True, highlight=False,
                      markup=False)
        with Progress(console, verbose=opts["verbose"], diff=opts["diff"]) as progress:
            options.trace = progress if opts["verbose"] >= 2 else None
            options.connect = replace(options.connect, confirm_host_key=progress.asking(
                options.connect.confirm_host_key))
            executor.progress = progress
            run = executor.run("check" if opts["check"] else "apply")
    if opts["diff"] and console.is_terminal:
        console.print(render_diffs(run), highlight=False, markup=False)
    outcome = apply_outcome(run)
    render_recap(run, console, verbose=opts["verbose"], outcome=outcome)
    return outcome.code
