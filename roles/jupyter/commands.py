"""What the jupyter role adds to the `gpuprov` command line: `gpuprov
jupyter-url HOST`, and the note `gpuprov onboard` ends with (how to reach
JupyterLab on the new host).

Like every role, it stays below the cli: a GpuprovError raised here is
printed by gpuprov's command group (one message, exit 1)."""

from __future__ import annotations

from typing import Any

import click

from gpuprov.errors import GpuprovError
from gpuprov.model.inventory import Inventory, load_inventory

from .access import jupyter_access


@click.command("jupyter-url")
@click.argument("host")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
# gpuprov's command group merges -i into INVENTORY, as for its own commands
@click.option("-i", "--inventory", "inventory_opt", metavar="INVENTORY",
              type=click.Path(dir_okay=False), help="The inventory file, as the INVENTORY "
              "argument (default: ./inventory.yml, else this machine).")
@click.option("-u", "--user", help="Your login on the host (default: the inventory's "
              "ansible_user).")
def jupyter_url(**opts: Any) -> None:
    """How a researcher reaches JupyterLab on HOST: the SSH tunnel, the URL
    and how to log in. Reads only the inventory; never prints a token."""
    inventory, _ = load_inventory(opts["inventory"])
    for warning in inventory.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(jupyter_access(inventory, opts["host"], opts["user"]), nl=False)


COMMANDS = [jupyter_url]


def host_notes(inventory: Inventory, host: str) -> str:
    """The end of `gpuprov onboard HOST`: how to reach JupyterLab there."""
    try:
        return jupyter_access(inventory, host)
    except GpuprovError as exc:   # Jupyter disabled or misconfigured: say so, not fail
        return f"Jupyter: {exc}"
