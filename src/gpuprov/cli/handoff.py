"""`gpuprov k8s-handoff`: what Kubernetes must be told about the cluster
nodes gpuprov provisioned (GPU Operator values, node labels, device plugin
values), from the inventory; with --facts, each node's GPUs as well."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from gpuprov.cli.common import (
    become_pass_option,
    check_writable,
    connect_options,
    emit_report,
    forks_option,
    guarded,
    inventory_argument,
    load_target,
    run_options,
)
from gpuprov.cli.exit_codes import EXIT_OK, EXIT_UNREACHABLE, epilog
from gpuprov.engine.collect import collect_facts
from gpuprov.engine.handoff import cluster_nodes, gpu_summary
from gpuprov.output.handoff import FORMATS, render


@click.command("k8s-handoff", epilog=epilog("k8s-handoff"))
@inventory_argument
@click.option("-l", "--limit", help="The cluster's hosts (a host pattern), e.g. -l cluster.")
@click.option("-o", "--output", "output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write to FILE (atomically, mode 0644) instead of printing.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="all", show_default=True,
              help="values: the GPU Operator's Helm values; labels: kubectl label commands; "
                   "device-plugin: the NVIDIA device plugin's Helm values; all: the three.")
@click.option("--facts", "with_facts", is_flag=True,
              help="Ask each node for its GPUs (as `gpuprov facts --fact gpu`) and list "
                   "their count and memory in the values' comments.")
@forks_option
@connect_options
@become_pass_option
@guarded
def k8s_handoff(**opts: Any) -> int:
    """Print what Kubernetes needs to know about the cluster nodes gpuprov
    provisioned: the GPU Operator's Helm values (driver and toolkit off, CDI
    on), the node labels as kubectl commands, and the NVIDIA device plugin's
    values for a cluster without the Operator. Connects to nothing unless
    --facts."""
    check_writable(opts["output"], "-o")
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    nodes = cluster_nodes(target.hosts)
    code = EXIT_OK
    if opts["with_facts"]:
        options = run_options({**opts, "tags": (), "skip_tags": (), "extra_vars": ()},
                              check=True, hosts=len(target.hosts))
        answers = collect_facts(target.hosts, options, ["gpu"])
        nodes = [dataclasses.replace(n, gpus=gpu_summary(answers[n.host])) for n in nodes]
        if any(a.get("unreachable") or a.get("error") for a in answers.values()):
            code = EXIT_UNREACHABLE   # printed all the same, the GPUs marked unknown
    # 0644: Helm values and kubectl commands hold no secret
    emit_report(render(nodes, opts["fmt"]), opts["output"], 0o644)
    return code
