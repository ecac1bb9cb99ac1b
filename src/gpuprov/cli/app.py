"""The `gpuprov` command: parse options, load, run, render, exit code.

Exit codes (design.md): apply 0 ok, 2 a task failed, 4 a host unreachable;
drift-check 0 in sync, 3 drift, 4 unreachable (no drift seen elsewhere);
verify 0 all pass, 2 a host failed, 4 a host unreachable;
1 a usage, input or internal error. An expected failure is one message
naming the file:line or host and task, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from gpuprov import __version__
from gpuprov.cli.onboard import onboard_flow
from gpuprov.engine.connect import ConnectOptions
from gpuprov.engine.executor import Executor, RunOptions, collect_facts
from gpuprov.engine.onboard import run_verify
from gpuprov.engine.results import RunResult
from gpuprov.errors import GpuprovError
from gpuprov.jupyter_url import jupyter_access
from gpuprov.model.inventory import Host, Inventory
from gpuprov.model.paths import bundled_dir, default_playbook
from gpuprov.model.playbook import Play, load_playbook, resolve_roles, role_search_path
from gpuprov.model.vars import parse_extra_vars
from gpuprov.output.drift import drift_json, drift_prometheus, drift_table, drift_table_text
from gpuprov.output.progress import Progress
from gpuprov.output.report import render_diffs, render_recap, write_json_report, write_text_atomic
from gpuprov.output.verify import verify_json, verify_rows, verify_table

EXIT_OK, EXIT_ERROR, EXIT_FAILED, EXIT_DRIFT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


@dataclass
class Target:
    """What a command runs against: the inventory, the selected hosts, the plays."""

    inventory: Inventory
    hosts: list[Host]
    embedded: bool          # no inventory given or found: this machine
    plays: list[Play]


def _load_inventory(path: str | None) -> tuple[Inventory, bool]:
    if path:
        return Inventory.load(path), False
    if Path("inventory.yml").is_file():
        return Inventory.load("inventory.yml"), False
    return Inventory.local(), True


def _target(inventory_arg: str | None, limit: str | None, playbook: str | None,
            need_plays: bool = True) -> Target:
    inventory, embedded = _load_inventory(inventory_arg)
    for warning in inventory.warnings:
        # escape: a path like inv[dev].yml or a value like [a] is text, not markup
        _stderr().print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False,
                        soft_wrap=True)
    hosts = inventory.select(limit) if limit else list(inventory.hosts.values())
    if not hosts:
        # "in sync" about zero hosts would be a lie a monitor cannot see through.
        raise GpuprovError(f"{inventory.path or 'the inventory'} has no hosts",
                           hint="add hosts under all: hosts: or a group's hosts:")
    plays: list[Play] = []
    if need_plays:
        book = Path(playbook) if playbook else default_playbook()
        if book is None:
            raise GpuprovError("no playbook given and no playbooks/site.yml found",
                               hint="pass -p/--playbook FILE.yml")
        plays = load_playbook(book)
        resolve_roles(plays, role_search_path(book, bundled_dir("roles")))
    return Target(inventory, hosts, embedded, plays)


@functools.cache
def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _run_options(ctx: dict[str, Any], check: bool) -> RunOptions:
    password = None
    if ctx["ask_become_pass"]:
        # Asked once per run, kept in memory, fed to sudo on stdin only.
        password = click.prompt("BECOME password", hide_input=True, err=True)
    return RunOptions(
        check=check, forks=ctx["forks"], serial=ctx.get("serial"),
        max_fail_percentage=ctx.get("max_fail_percentage"),
        tags=frozenset(_split(ctx["tags"])), skip_tags=frozenset(_split(ctx["skip_tags"])),
        extra_vars=parse_extra_vars(ctx["extra_vars"]), reboot=ctx.get("reboot", False),
        connect=ConnectOptions(strict_host_keys=ctx["strict_host_keys"],
                               become_password=password))


def _split(values: tuple[str, ...]) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def _serial(value: str | None) -> int | str | None:
    if value is None:
        return None
    text = value.strip()
    number = text[:-1] if text.endswith("%") else text
    if not number.isdigit() or int(number) == 0:
        raise click.BadParameter("expected a host count like 5 or a share like 30%",
                                 param_hint="'--serial'")
    return text if text.endswith("%") else int(text)


def _check_writable(path: str | None, option: str) -> None:
    """Refuse a report path that cannot be written before the run, not after it."""
    if path is None:
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise GpuprovError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GpuprovError(f"{option} {path}: directory {parent} is not writable")


def _write_file(path: str, write: Callable[[], None]) -> None:
    """Run `write`; an OS error becomes one message, not a traceback."""
    try:
        write()
    except OSError as exc:
        raise GpuprovError(f"cannot write {path}: {exc.strerror or exc}") from None


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every host-running command takes, in Ansible's spelling."""
    decorators = [
        click.argument("inventory", required=False, type=click.Path(dir_okay=False)),
        click.option("-p", "--playbook", type=click.Path(exists=True, dir_okay=False),
                     help="Playbook (default: ./playbooks/site.yml, else the bundled one)."),
        click.option("-l", "--limit", help="Host pattern: names, globs, groups, a:b, a:&b, a:!b."),
        click.option("-t", "--tags", multiple=True, help="Only roles with these tags (a role's "
                     "name is always one of its tags)."),
        click.option("--skip-tags", multiple=True, help="Leave out roles with these tags."),
        click.option("-e", "--extra-vars", multiple=True,
                     help="k=v, 'k=v k2=v2', @file.yml or a YAML mapping; highest precedence."),
        click.option("-f", "--forks", type=click.IntRange(1, 500), default=10, show_default=True,
                     help="Hosts worked on in parallel."),
        click.option("--strict-host-keys", is_flag=True,
                     help="Refuse hosts not in known_hosts (default: accept and record new)."),
        click.option("-K", "--ask-become-pass", is_flag=True,
                     help="Ask once for the sudo password (fed on stdin, never argv)."),
        click.option("-v", "--verbose", count=True, help="More detail: ok tasks, round trips."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def _guarded(fn: Callable[..., int]) -> Callable[..., int]:
    """Expected failures -> one readable message and exit 1."""
    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> int:
        try:
            return fn(**kwargs)
        except GpuprovError as exc:
            # escape: file names and values in the message are text, not markup;
            # soft_wrap: a path in a log or CI output is never broken across lines.
            _stderr().print(f"[red]error:[/] {escape(str(exc))}", highlight=False,
                            markup=True, soft_wrap=True)
            return EXIT_ERROR
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpuprov")
def cli() -> None:
    """Provision GPU deep-learning hosts over SSH: NVIDIA driver, container
    toolkit, image, hardened access. Without INVENTORY: ./inventory.yml, else
    this machine."""


@cli.command()
@common_options
@click.option("--check", is_flag=True, help="Compute every change, run none of them.")
@click.option("--diff", is_flag=True, help="Show a unified diff per changed file (secrets masked).")
@click.option("--serial", help="Batch size: a host count (5) or a share (30%).")
@click.option("--max-fail-percentage", type=click.FloatRange(0, 100),
              help="Stop when more than this share of a batch fails.")
@click.option("--reboot", is_flag=True, help="Reboot hosts that need it (and wait), even "
              "where `reboot: never` is set.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False),
              help="Write every change and error to FILE.json.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before changing this machine.")
@_guarded
def apply(**opts: Any) -> int:
    """Converge the hosts to the playbook's desired state."""
    opts["serial"] = _serial(opts["serial"])
    _check_writable(opts["report_file"], "--report")
    target = _target(opts["inventory"], opts["limit"], opts["playbook"])
    if target.embedded and not opts["check"] and not opts["yes"]:
        if not sys.stdin.isatty():
            raise GpuprovError("no inventory: apply would change THIS machine, and there is no "
                               "terminal to ask", hint="pass --yes, or --check to only look")
        if not click.confirm("No inventory given: apply the playbook to THIS machine?",
                             err=True):
            return EXIT_ERROR
    options = _run_options(opts, check=opts["check"])
    console = _stdout()
    with Progress(console, verbose=opts["verbose"], diff=opts["diff"]) as progress:
        run = Executor(target.inventory, target.plays, target.hosts, options,
                       progress).run("check" if opts["check"] else "apply")
    if opts["diff"] and console.is_terminal:
        console.print(render_diffs(run), highlight=False, markup=False)
    render_recap(run, console, verbose=opts["verbose"])
    if opts["report_file"]:
        _write_file(opts["report_file"], lambda: write_json_report(
            opts["report_file"], run, _report_extra(target, opts)))
    return apply_exit_code(run)


@cli.command("drift-check")
@common_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "prometheus"]),
              default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the report to FILE (atomically) instead of stdout.")
@_guarded
def drift_check(**opts: Any) -> int:
    """What differs from the desired state, per host. Read-only."""
    _check_writable(opts["output"], "--output")
    target = _target(opts["inventory"], opts["limit"], opts["playbook"])
    options = _run_options(opts, check=True)
    err = _stderr()
    # Progress only for a person at a terminal; cron and monitors get the report alone.
    progress = Progress(err, verbose=opts["verbose"]) if err.is_terminal else None
    with progress or contextlib.nullcontext():
        run = Executor(target.inventory, target.plays, target.hosts, options,
                       progress).run("drift-check")
    if opts["fmt"] == "table" and not opts["output"]:
        drift_table(run, _stdout())
    else:
        if opts["fmt"] == "table":
            text = drift_table_text(run)
        else:
            text = drift_json(run) if opts["fmt"] == "json" else drift_prometheus(run)
        if opts["output"]:
            # atomic: a monitor never reads half a file
            _write_file(opts["output"], lambda: write_text_atomic(opts["output"], text))
        else:
            click.echo(text, nl=not text.endswith("\n"))
    return drift_exit_code(run)


@cli.command()
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
@click.option("-l", "--limit", help="Host pattern: names, globs, groups, a:b, a:&b, a:!b.")
@click.option("-e", "--extra-vars", multiple=True,
              help="k=v, @file.yml or a YAML mapping, e.g. gpu_devices=0,1.")
@click.option("-f", "--forks", type=click.IntRange(1, 500), default=10, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--strict-host-keys", is_flag=True)
@click.option("-K", "--ask-become-pass", is_flag=True)
@_guarded
def verify(**opts: Any) -> int:
    """Is the GPU usable inside the image on every host? nvidia-smi, then
    `docker run --gpus` with torch and a matmul. Changes nothing.
    Exit 0 all pass, 2 some host failed, 4 some host unreachable."""
    target = _target(opts["inventory"], opts["limit"], None, need_plays=False)
    options = _run_options({**opts, "tags": (), "skip_tags": ()}, check=False)
    err = _stderr()
    progress = Progress(err) if err.is_terminal and opts["fmt"] == "table" else None
    with progress or contextlib.nullcontext():
        run = run_verify(target.inventory, target.hosts, options, progress)
    rows = verify_rows(run)
    if opts["fmt"] == "json":
        click.echo(verify_json(rows), nl=False)
    else:
        verify_table(rows, _stdout())
    if any(r["status"] == "fail" for r in rows):
        return EXIT_FAILED
    return EXIT_UNREACHABLE if any(r["status"] == "unreachable" for r in rows) else EXIT_OK


@cli.command()
@click.argument("host")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
@click.option("-g", "--group", required=True, help="Inventory group: lab, cloud, cluster...")
@click.option("--address", help="IP or DNS name to reach it (default: HOST).")
@click.option("--login-user", help="User for the first login (default: the inventory's user); "
              "e.g. ubuntu for a cloud image.")
@click.option("--user", help="Admin user to create (default: the inventory's user).")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False),
              help="gpuprov's private key for this host; its .pub is installed.")
@click.option("-k", "--ask-pass", is_flag=True, help="Ask once for the login password.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False),
              help="Read the login password from FILE (first line), for unattended runs.")
@click.option("-K", "--ask-become-pass", is_flag=True,
              help="Ask for a sudo password different from the login password.")
@click.option("--host-key-fingerprint", help="SHA256:... the host key must have (needed "
              "when there is no terminal to confirm it).")
@click.option("--sudo", type=click.Choice(["nopasswd", "password"]), default="nopasswd",
              show_default=True, help="sudo rule for the admin user.")
@click.option("-p", "--playbook", type=click.Path(exists=True, dir_okay=False))
@click.option("-e", "--extra-vars", multiple=True)
@click.option("--reboot", is_flag=True, help="Reboot if the new driver needs it, and wait.")
@click.option("--dry-run", is_flag=True, help="Show the inventory change and the steps; "
              "touch nothing.")
@_guarded
def onboard(**opts: Any) -> int:
    """Take a new machine (password login, or a cloud key) to a verified GPU
    host in the inventory: host key, admin user + key + sudo, inventory
    entry, the site playbook, verify. Re-run to continue after a failure."""
    return onboard_flow(opts, _stdout(), _stderr())


@cli.command()
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
@click.option("-l", "--limit")
@click.option("-f", "--forks", type=click.IntRange(1, 500), default=10)
@click.option("--strict-host-keys", is_flag=True)
@click.option("-K", "--ask-become-pass", is_flag=True)
@_guarded
def facts(**opts: Any) -> int:
    """System facts of each host as JSON (one round trip per host)."""
    target = _target(opts["inventory"], opts["limit"], None, need_plays=False)
    options = _run_options({**opts, "tags": (), "skip_tags": (), "extra_vars": ()}, check=True)
    data = collect_facts(target.hosts, options)
    click.echo(json.dumps(data, indent=2, sort_keys=True))
    failed = any("error" in v or "unreachable" in v for v in data.values())
    return EXIT_UNREACHABLE if failed else EXIT_OK


@cli.command("inventory")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
@click.option("--list", "as_list", is_flag=True, help="Hosts, groups and vars as JSON.")
@click.option("--graph", is_flag=True, help="The group tree.")
@click.option("-l", "--limit")
@_guarded
def inventory_cmd(**opts: Any) -> int:
    """Show the inventory as gpuprov reads it (secrets masked)."""
    target = _target(opts["inventory"], opts["limit"], None, need_plays=False)
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


@cli.command("jupyter-url")
@click.argument("host")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False))
@click.option("-u", "--user", help="Your login on the host (default: the inventory's "
              "ansible_user).")
@_guarded
def jupyter_url(**opts: Any) -> int:
    """How a researcher reaches JupyterLab on HOST: the SSH tunnel, the URL
    and how to log in. Reads only the inventory; never prints a token."""
    target = _target(opts["inventory"], None, None, need_plays=False)
    click.echo(jupyter_access(target.inventory, opts["host"], opts["user"]), nl=False)
    return EXIT_OK


def apply_exit_code(run: RunResult) -> int:
    if run.any_failed or run.aborted:
        return EXIT_FAILED
    if run.any_unreachable:
        return EXIT_UNREACHABLE
    return EXIT_OK


def drift_exit_code(run: RunResult) -> int:
    # A host whose check failed could not be compared: an error (1), unless
    # drift was found elsewhere, which is what a monitor must hear about.
    if run.any_changed:
        return EXIT_DRIFT
    if run.any_failed:
        return EXIT_ERROR
    if run.any_unreachable:
        return EXIT_UNREACHABLE
    return EXIT_OK


def _report_extra(target: Target, opts: dict[str, Any]) -> dict[str, Any]:
    return {"inventory": str(target.inventory.path) if target.inventory.path else None,
            "playbook": opts.get("playbook"), "limit": opts.get("limit")}


def main() -> None:
    """Entry point: click's usage errors exit 1 (not 2, which means 'a task failed')."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _stderr().print("aborted")
        code = EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        code = EXIT_ERROR
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        code = 130
    sys.exit(code if isinstance(code, int) else EXIT_OK)
