"""`gpuprov inventory`: the inventory as gpuprov reads it, changing nothing."""

from __future__ import annotations

import json
from typing import Any

import click

from gpuprov.cli.common import guarded, inventory_argument, load_target
from gpuprov.cli.exit_codes import EXIT_OK


@click.command("inventory")
@inventory_argument
@click.option("--list", "as_list", is_flag=True, help="Groups and hosts as JSON in "
              "ansible-inventory --list's shape (_meta.hostvars: each host's merged vars; "
              "groups: hosts, children), secrets masked.")
@click.option("--export", is_flag=True, help="With --list: each group's own vars under "
              "\"vars\" (as ansible-inventory --export).")
@click.option("--graph", is_flag=True, help="The group tree (ansible-inventory --graph).")
@click.option("--host", "host_name", metavar="NAME", help="One host's merged vars as JSON, "
              "secrets masked (ansible-inventory --host).")
@click.option("-l", "--limit", help="Only these hosts (a host pattern), in --list and --graph.")
@guarded
def inventory_cmd(**opts: Any) -> int:
    """Show the inventory as gpuprov reads it, secrets masked: exactly one of
    --list, --graph, --host NAME (as ansible-inventory)."""
    given = [flag for flag, key in (("--list", "as_list"), ("--graph", "graph"),
                                    ("--host", "host_name")) if opts[key]]
    if len(given) != 1:
        raise click.UsageError("pass exactly one of --list, --graph, --host NAME"
                               + (f" (got {' and '.join(given)})" if given else ""))
    if opts["export"] and not opts["as_list"]:
        raise click.UsageError("--export goes with --list")
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    inventory, names = target.inventory, [h.name for h in target.hosts]
    if opts["host_name"]:
        click.echo(json.dumps(inventory.host_json(opts["host_name"]), indent=2, default=str))
    elif opts["graph"]:
        click.echo(inventory.graph(only=names if opts["limit"] else None))
    else:
        data = inventory.to_list_json(only=names if opts["limit"] else None,
                                      export=opts["export"])
        click.echo(json.dumps(data, indent=2, default=str))
    return EXIT_OK
