"""`gpuprov apply` and `gpuprov drift-check`: the same plays, run or only
compared."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import replace
from typing import Any

import click

from gpuprov.cli.common import (
    Target,
    check_writable,
    common_options,
    emit_report,
    guarded,
    load_target,
    lock_timeout_option,
    report_extra,
    run_options,
    serial_option,
    stderr,
    stdout,
    write_file,
)
from gpuprov.cli.exit_codes import EXIT_ERROR, apply_outcome, drift_outcome, epilog
from gpuprov.cli.listing import list_or_check, listing_options
from gpuprov.engine.executor import Executor, RunOptions
from gpuprov.engine.selection import selected_roles
from gpuprov.errors import GpuprovError
from gpuprov.output.drift import drift_json, drift_prometheus, drift_table, drift_table_text
from gpuprov.output.progress import Progress
from gpuprov.output.report import (
    parse_report_mode,
    render_diffs,
    render_recap,
    write_json_report,
)
from gpuprov.output.summary import header_line


def _report_mode(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_report_mode(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


#: reports hold diffs of root-only files: 0600 unless a monitor's group must read them
report_mode_option = click.option(
    "--report-mode", default="0600", show_default=True, callback=_report_mode,
    help="File mode of the report written (0640: also its group, e.g. node_exporter's).")


def header(command: str, target: Target, options: RunOptions) -> str:
    """The run's first line: playbook, roles and tags selected, host count."""
    book = target.plays[0].file if target.plays and target.plays[0].file else "the playbook"
    relative = os.path.relpath(book)   # shorter where the playbook is under the cwd
    book = book if relative.startswith("..") else relative
    roles = selected_roles(target.plays, options.tags, options.skip_tags)
    return header_line(command, book, roles, sorted(options.tags), sorted(options.skip_tags),
                       len(target.hosts))


@click.command(epilog=epilog("apply"))
@common_options
@click.option("-C", "--check", is_flag=True, help="Compute every change, run none of them.")
@click.option("-D", "--diff", is_flag=True,
              help="Show a unified diff per changed file (secrets masked).")
@click.option("--serial", callback=serial_option,
              help="Batch size: a host count (5) or a share of the hosts (30%).")
@click.option("--max-fail-percentage", type=click.FloatRange(0, 100),
              help="Stop when more than this share of a batch fails.")
@click.option("--reboot", is_flag=True, help="Reboot hosts that need it (and wait), even "
              "where `reboot: never` is set.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False),
              help="Write every change and error to FILE.json.")
@report_mode_option
@lock_timeout_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask before changing this machine.")
@listing_options
@guarded
def apply(**opts: Any) -> int:
    """Converge the hosts to the playbook's desired state."""
    listed = list_or_check(opts)
    if listed is not None:
        return listed
    check_writable(opts["report_file"], "--report")
    target = load_target(opts["inventory"], opts["limit"], opts["playbook"])
    if target.embedded and not opts["check"] and not opts["yes"]:
        if not sys.stdin.isatty():
            raise GpuprovError("no inventory: apply would change THIS machine, and there is no "
                               "terminal to ask", hint="pass --yes, or --check to only look")
        if not click.confirm("No inventory given: apply the playbook to THIS machine?",
                             err=True):
            return EXIT_ERROR
    options = run_options(opts, check=opts["check"], hosts=len(target.hosts))
    console = stdout()
    # built first: tags that select nothing fail here, before the header and any host
    executor = Executor(target.inventory, target.plays, target.hosts, options)
    console.print(header("apply --check" if opts["check"] else "apply", target, options),
                  soft_wrap=True, highlight=False, markup=False)
    with Progress(console, verbose=opts["verbose"], diff=opts["diff"]) as progress:
        options.trace = progress if opts["verbose"] >= 2 else None
        options.connect = replace(options.connect, confirm_host_key=progress.asking(
            options.connect.confirm_host_key))
        executor.progress = progress   # options is the executor's own: it reads them as it runs
        run = executor.run("check" if opts["check"] else "apply")
    if opts["diff"] and console.is_terminal:
        console.print(render_diffs(run), highlight=False, markup=False)
    outcome = apply_outcome(run)
    render_recap(run, console, verbose=opts["verbose"], outcome=outcome)
    if opts["report_file"]:
        extra = {**report_extra(target, opts), "exit_code": outcome.code,
                 "status": outcome.status}
        write_file(opts["report_file"], lambda: write_json_report(
            opts["report_file"], run, extra, opts["report_mode"]))
    return outcome.code


@click.command("drift-check", epilog=epilog("drift-check"))
@common_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "prometheus"]),
              default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the report to FILE (atomically) instead of stdout.")
@click.option("-D", "--diff", is_flag=True, help="Show a unified diff per drifted file "
              "after the table (secrets masked).")
@report_mode_option
@lock_timeout_option
@listing_options
@guarded
def drift_check(**opts: Any) -> int:
    """What differs from the desired state, per host. Read-only."""
    listed = list_or_check(opts)
    if listed is not None:
        return listed
    check_writable(opts["output"], "--output")
    target = load_target(opts["inventory"], opts["limit"], opts["playbook"])
    options = run_options(opts, check=True, hosts=len(target.hosts))
    executor = Executor(target.inventory, target.plays, target.hosts, options)
    err = stderr()
    to_stdout = opts["fmt"] == "table" and not opts["output"]
    top = header("drift-check", target, options)
    # The header opens a table (on stdout or in the file); beside a machine
    # format it goes to stderr, and only for a person or -v: cron mails any
    # stderr line.
    if to_stdout or (opts["fmt"] != "table" and (err.is_terminal or opts["verbose"] >= 1)):
        (stdout() if to_stdout else err).print(top, soft_wrap=True, highlight=False,
                                               markup=False)
    # Progress only for a person at a terminal, or asked for (-vv: the commands, on
    # stderr); cron and monitors get the report alone.
    progress = (Progress(err, verbose=opts["verbose"])
                if err.is_terminal or opts["verbose"] >= 2 else None)
    options.trace = progress if opts["verbose"] >= 2 else None
    if progress is not None:
        options.connect = replace(options.connect, confirm_host_key=progress.asking(
            options.connect.confirm_host_key))
    executor.progress = progress   # options is the executor's own: it reads them as it runs
    with progress or contextlib.nullcontext():
        run = executor.run("drift-check")
    outcome = drift_outcome(run)
    if to_stdout:
        drift_table(run, stdout(), outcome)
    if opts["diff"] and (diffs := render_diffs(run)):
        # after the table; beside a JSON or Prometheus report, on stderr, never inside it
        click.echo(diffs, nl=False, err=not to_stdout)
    if not to_stdout:
        if opts["fmt"] == "table":
            text = f"{top}\n{drift_table_text(run, outcome=outcome)}"
        elif opts["fmt"] == "json":
            text = drift_json(run, outcome)
        else:
            text = drift_prometheus(run, outcome)
        emit_report(text, opts["output"], opts["report_mode"])
    return outcome.code
