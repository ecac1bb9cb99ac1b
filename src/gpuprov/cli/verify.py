"""`gpuprov verify`: is the GPU usable inside the image on every host?"""

from __future__ import annotations

import contextlib
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
from gpuprov.cli.exit_codes import epilog, host_code, worst
from gpuprov.engine.verify import run_verify
from gpuprov.output.progress import Progress
from gpuprov.output.verify import verify_json, verify_rows, verify_table


@click.command(epilog=epilog("verify"))
@inventory_argument
@click.option("-l", "--limit", help="Host pattern: names, globs, groups, a:b, a:&b, a:!b.")
@click.option("-e", "--extra-vars", multiple=True,
              help="k=v, @file.yml or a YAML mapping, e.g. gpu_devices=0,1.")
@forks_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@connect_options
@become_pass_option
@lock_timeout_option
@guarded
def verify(**opts: Any) -> int:
    """Is the GPU usable inside the image on every host? nvidia-smi, then
    `docker run --gpus` with torch and a matmul. Changes nothing."""
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    options = run_options({**opts, "tags": (), "skip_tags": ()}, check=False,
                          hosts=len(target.hosts))
    err = stderr()
    progress = Progress(err) if err.is_terminal and opts["fmt"] == "table" else None
    with progress or contextlib.nullcontext():
        run = run_verify(target.inventory, target.hosts, options, progress)
    rows = verify_rows(run)
    if opts["fmt"] == "json":
        click.echo(verify_json(rows), nl=False)
    else:
        verify_table(rows, stdout())
    return worst(host_code(failed=r["status"] == "fail", unreachable=r["status"] == "unreachable")
                 for r in rows)
