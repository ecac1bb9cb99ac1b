"""`gpuprov facts` and `gpuprov inventory`: what gpuprov sees, changing nothing."""

from __future__ import annotations

import json
from typing import Any

import click

from gpuprov.cli.common import connect_options, forks_option, guarded, load_target, run_options
from gpuprov.cli.exit_codes import EXIT_OK, epilog, host_code, worst
from gpuprov.engine.collect import collect_facts


@click.command(epilog=epilog("facts"))
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
@click.option("-l", "--limit")
@forks_option
@connect_options
@click.option("-K", "--ask-become-pass", is_flag=True)
@guarded
def facts(**opts: Any) -> int:
    """System facts of each host as JSON (one round trip per host)."""
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    options = run_options({**opts, "tags": (), "skip_tags": (), "extra_vars": ()}, check=True,
                          hosts=len(target.hosts))
    data = collect_facts(target.hosts, options)
    click.echo(json.dumps(data, indent=2, sort_keys=True))
    return worst(host_code(failed=bool(v.get("error")), unreachable=bool(v.get("unreachable")))
                 for v in data.values())


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
