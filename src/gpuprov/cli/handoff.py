"""`gpuprov k8s-handoff`: what Kubernetes must be told about the cluster
nodes gpuprov provisioned (GPU Operator values, node labels, device plugin
values), from the inventory; with --facts, each node's GPUs as well."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
from rich.markup import escape

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
    stderr,
)
from gpuprov.cli.exit_codes import EXIT_OK, EXIT_UNREACHABLE, epilog
from gpuprov.engine.collect import collect_facts
from gpuprov.engine.handoff import (
    Node,
    cluster_nodes,
    containerd_version,
    gpu_summary,
    unread_distro_containerd,
    without_cdi,
)
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
              help="Ask each node for its GPUs and containerd version (as `gpuprov facts "
                   "--fact gpu,containerd`): GPU count and memory in the values' comments, "
                   "CDI off where a containerd is older than 1.7.")
@forks_option
@connect_options
@become_pass_option
@guarded
def k8s_handoff(**opts: Any) -> int:
    """Print what Kubernetes needs to know about the cluster nodes gpuprov
    provisioned: the GPU Operator's Helm values (driver and toolkit off, CDI
    on unless a node's containerd is older than 1.7), the node labels as
    kubectl commands, and the NVIDIA device plugin's values for a cluster
    without the Operator. Connects to nothing unless --facts."""
    check_writable(opts["output"], "-o")
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    nodes = cluster_nodes(target.hosts)
    code = EXIT_OK
    if opts["with_facts"]:
        options = run_options({**opts, "tags": (), "skip_tags": (), "extra_vars": ()},
                              check=True, hosts=len(target.hosts))
        # one facts script per host, as before: the version rides along with the GPUs
        answers = collect_facts(target.hosts, options, ["gpu", "containerd"])
        nodes = [_with_facts(n, answers[n.host]) for n in nodes]
        if any(a.get("unreachable") or a.get("error") for a in answers.values()):
            code = EXIT_UNREACHABLE   # printed all the same, the GPUs marked unknown
    _warn_cdi(nodes)
    # 0644: Helm values and kubectl commands hold no secret
    emit_report(render(nodes, opts["fmt"]), opts["output"], 0o644)
    return code


def _with_facts(node: Node, answer: dict[str, Any]) -> Node:
    version, why = containerd_version(answer)
    return dataclasses.replace(node, gpus=gpu_summary(answer), containerd=version,
                               containerd_why=why)


def _warn_cdi(nodes: list[Node]) -> None:
    """On stderr too: with -o the output's comments are in a file nobody reads."""
    old = without_cdi(nodes)
    unread = unread_distro_containerd(nodes)
    if old:
        text = ("CDI is off for the whole cluster: containerd older than 1.7 has no CDI on "
                + ", ".join(f"{n.name} ({n.containerd})" for n in old))
    elif unread:
        text = ("containerd_package: containerd on " + ", ".join(n.name for n in unread)
                + ": containerd older than 1.7 (Debian 12's 1.6) has no CDI, which these "
                "values rely on; re-run with --facts to read its version")
    else:
        return
    stderr().print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)
