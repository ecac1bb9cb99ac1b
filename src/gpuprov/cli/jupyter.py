"""`gpuprov jupyter-url HOST`: how a researcher reaches JupyterLab there."""

from __future__ import annotations

from typing import Any

import click

from gpuprov.cli.common import guarded, load_target
from gpuprov.cli.exit_codes import EXIT_OK
from gpuprov.jupyter_url import jupyter_access


@click.command("jupyter-url")
@click.argument("host")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
@click.option("-u", "--user", help="Your login on the host (default: the inventory's "
              "ansible_user).")
@guarded
def jupyter_url(**opts: Any) -> int:
    """How a researcher reaches JupyterLab on HOST: the SSH tunnel, the URL
    and how to log in. Reads only the inventory; never prints a token."""
    target = load_target(opts["inventory"], None, None, need_plays=False)
    click.echo(jupyter_access(target.inventory, opts["host"], opts["user"]), nl=False)
    return EXIT_OK
