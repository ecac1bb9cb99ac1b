"""`gpuprov facts`: what each host is and has, as JSON, changing nothing."""

from __future__ import annotations

import json
from typing import Any

import click

from gpuprov.cli.common import (
    become_pass_option,
    connect_options,
    forks_option,
    guarded,
    inventory_argument,
    load_target,
    run_options,
    split_csv,
)
from gpuprov.cli.exit_codes import epilog, host_code, worst
from gpuprov.engine.collect import CATALOGUE, collect_facts, unknown_names

_NAMES = ", ".join(CATALOGUE)


def _fact_names(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    names = list(dict.fromkeys(split_csv(value)))
    unknown = unknown_names(names)
    if unknown:
        raise click.BadParameter(f"unknown fact {', '.join(map(repr, unknown))}; "
                                 f"valid names: {_NAMES}", ctx, param)
    return names


_HELP = ("""Facts of each host as JSON, one round trip per host: OS, GPUs, CPU,
memory, disk, container runtimes.

All of them by default: OS, kernel, arch, init, Secure Boot, pending reboot,
GPUs (nvidia-smi: name, memory, driver, CUDA), CPU, memory, disk, docker and
containerd versions.

\b
Names for --fact:
""" + "\n".join(f"  {name:15} {named.help}" for name, named in CATALOGUE.items()))


@click.command(help=_HELP, epilog=epilog("facts"))
@inventory_argument
@click.option("-l", "--limit", help="Host pattern: names, globs, groups, a:b, a:&b, a:!b.")
@click.option("--fact", "fact_names", multiple=True, callback=_fact_names, metavar="NAME",
              help=f"Only these facts (repeat, or a comma list): {_NAMES}. Default: all.")
@forks_option
@connect_options
@become_pass_option
@guarded
def facts(**opts: Any) -> int:
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    options = run_options({**opts, "tags": (), "skip_tags": (), "extra_vars": ()}, check=True,
                          hosts=len(target.hosts))
    data = collect_facts(target.hosts, options, opts["fact_names"])
    click.echo(json.dumps(data, indent=2, sort_keys=True))
    return worst(host_code(failed=bool(v.get("error")), unreachable=bool(v.get("unreachable")))
                 for v in data.values())
