"""`gpuprov inventory`: the inventory as gpuprov reads it, changing nothing."""

from __future__ import annotations

import json
from typing import Any

import click

from gpuprov.cli.common import guarded, load_target
from gpuprov.cli.exit_codes import EXIT_OK


@click.command("inventory")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
@click.option("--list", "as_list", is_flag=True, help="Hosts, groups and vars as JSON.")
@click.option("--graph", is_flag=True, help="The group tree.")
@click.option("-l", "--limit")
@guarded
def inventory_cmd(**opts: Any) -> int:
    """Show the inventory as gpuprov reads it (secrets masked)."""
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    if opts["graph"]:
        click.echo(target.inventory.graph())
    else:
        data = target.inventory.to_list_json()
        if opts["limit"]:
            data = {"_meta": {"hostvars": {h.name: data["_meta"]["hostvars"][h.name]
                                           for h in target.hosts}},
                    "hosts": [h.name for h in target.hosts]}
        click.echo(json.dumps(data, indent=2, default=str))
    return EXIT_OK
