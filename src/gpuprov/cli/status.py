"""`gpuprov status`: what each host's GPUs are doing and whether the host is
healthy, judged by the health rules, changing nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

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
    stdout,
)
from gpuprov.cli.exit_codes import EXIT_INTERRUPTED, epilog, status_outcome
from gpuprov.cli.run import report_mode_option
from gpuprov.engine.health import Alert, HealthRules, host_alerts, load_defaults, rules_for
from gpuprov.engine.status import StatusCollector
from gpuprov.output.status import status_json, status_prometheus
from gpuprov.output.status_table import status_renderable, status_table, status_table_text
from gpuprov.output.summary import Outcome

Status = dict[str, dict[str, Any]]
FORMATS: dict[str, Callable[[Status, Mapping[str, list[Alert]], Outcome], str]] = {
    "table": lambda s, a, o: status_table_text(s, a, o),
    "json": lambda s, a, o: status_json(s, a, o),
    "prometheus": lambda s, a, o: status_prometheus(s, a, o),
}


def _watch_seconds(ctx: click.Context, param: click.Parameter,
                   value: float | None) -> float | None:
    # Checked here, before the inventory is read: a usage error connects to nothing.
    fmt = ctx.params.get("fmt", "table")
    if value is not None and fmt != "table":
        raise click.UsageError(f"--watch redraws the table; --format {fmt} is one document "
                               "per run (run it from cron or a loop instead)", ctx)
    return value


_HELP = """Each host's GPUs and health, in one round trip per host: per GPU its
utilisation, memory, temperature, power, ECC errors, pending retired pages or
remapped rows, throttle reasons and processes; the host's driver and CUDA,
reboot pending, uptime, load, memory, free space on data_dir, sshd, docker,
containerd and Jupyter (running with the declared spec, and asking for
credentials on its port), and the last apply. Changes nothing.

The health rules (health_* inventory variables, overridable per group or
host; defaults in gpuprov/data/health_defaults.yml) raise alerts: a GPU at or
above health_gpu_temperature_max (85 C), ECC errors, pending pages, thermal or
power throttling, a GPU missing since the last apply, a stopped service,
Jupyter down or answering without credentials. A reboot pending is a warning.
"""


@click.command(help=_HELP, epilog=epilog("status"))
@inventory_argument
@click.option("-l", "--limit", help="Host pattern: names, globs, groups, a:b, a:&b, a:!b.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "prometheus"]),
              default="table", show_default=True, is_eager=True,
              help="table for people; json (the data, alerts and summary); prometheus "
                   "(node_exporter textfile metrics gpuprov_status_*).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the report to FILE (atomically) instead of stdout.")
@report_mode_option
@click.option("--watch", type=click.FloatRange(min=1.0), metavar="N", callback=_watch_seconds,
              help="Redraw the table every N seconds over the same connections, until "
                   "Ctrl-C (exit 130). Table only.")
@forks_option
@connect_options
@become_pass_option
@click.option("-v", "--verbose", count=True,
              help="More detail: -v the hosts, forks and each host's round trips.")
@guarded
def status(**opts: Any) -> int:
    if opts["watch"] is not None and opts["output"]:
        raise click.UsageError("--watch redraws the table on the terminal; drop -o/--output")
    check_writable(opts["output"], "--output")
    target = load_target(opts["inventory"], opts["limit"], None, need_plays=False)
    # every host's rules before any connection: a bad value is one error, exit 1
    defaults = load_defaults()
    rules = {host.name: rules_for(host, defaults) for host in target.hosts}
    options = run_options({**opts, "tags": (), "skip_tags": (), "extra_vars": ()}, check=True,
                          hosts=len(target.hosts))
    collector = StatusCollector(target.hosts, options)
    try:
        if opts["watch"] is not None:
            return _watch(collector, rules, opts["watch"], opts["verbose"])
        data = collector.collect()
    finally:
        collector.close()
    _trips(data, opts["verbose"])
    alerts = host_alerts(data, rules)
    outcome = status_outcome(data, alerts)
    if opts["fmt"] == "table" and not opts["output"]:
        status_table(data, alerts, _wide(stdout()), outcome)
        return outcome.code
    emit_report(FORMATS[opts["fmt"]](data, alerts, outcome), opts["output"],
                opts["report_mode"])
    return outcome.code


def _wide(console: Console) -> Console:
    """A pipe or a log gets the table at 160 columns, not 80 (rich's guess)."""
    return console if console.is_terminal else Console(highlight=False, width=160)


def _trips(data: Status, verbose: int) -> None:
    if verbose < 1:
        return
    for name, host in data.items():
        trips = host.get("round_trips") or 0
        stderr().print(f"{name}: {trips} round trip{'' if trips == 1 else 's'}",
                       markup=False, highlight=False)


def _watch(collector: StatusCollector, rules: dict[str, HealthRules], seconds: float,
           verbose: int) -> int:
    """Collect and redraw until Ctrl-C: in place at a terminal (rich Live), one
    table after another in a pipe. The caller closes the connections."""
    console = _wide(stdout())
    try:
        if console.is_terminal:
            with Live(console=console, auto_refresh=False, transient=False) as live:
                while True:
                    live.update(_refresh(collector, rules, verbose, seconds), refresh=True)
                    time.sleep(seconds)
        while True:
            console.print(_refresh(collector, rules, verbose, seconds), highlight=False)
            console.file.flush()
            time.sleep(seconds)
    except KeyboardInterrupt:
        stderr().print("interrupted")
        return EXIT_INTERRUPTED


def _refresh(collector: StatusCollector, rules: dict[str, HealthRules], verbose: int,
             seconds: float) -> RenderableType:
    data = collector.collect()
    _trips(data, verbose)
    alerts = host_alerts(data, rules)
    stamp = time.strftime("%H:%M:%S")
    return Group(Text(f"gpuprov status at {stamp}, every {seconds:g}s (Ctrl-C ends)",
                      style="dim"),
                 status_renderable(data, alerts, status_outcome(data, alerts)))
