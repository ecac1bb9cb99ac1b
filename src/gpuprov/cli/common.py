"""What the commands share: the target (inventory, hosts, plays), run
options, consoles, Ansible-spelled common options, and one readable message
for an expected failure."""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from gpuprov.cli.exit_codes import EXIT_ERROR
from gpuprov.connectors.hostkeys import ACCEPT_NEW, STRICT, Confirm
from gpuprov.engine.connect import ConnectOptions
from gpuprov.engine.executor import RunOptions
from gpuprov.engine.forks import AUTO, MAX_FORKS, resolve_forks
from gpuprov.engine.prefetch import default_cache_dir
from gpuprov.errors import GpuprovError
from gpuprov.model.inventory import Host, Inventory, load_inventory
from gpuprov.model.playbook import Play, load_plays, parse_serial
from gpuprov.model.vars import parse_extra_vars


@dataclass
class Target:
    """What a command runs against: the inventory, the selected hosts, the plays."""

    inventory: Inventory
    hosts: list[Host]
    embedded: bool          # no inventory given or found: this machine
    plays: list[Play]


def load_target(inventory_arg: str | None, limit: str | None, playbook: str | None,
            need_plays: bool = True) -> Target:
    inventory, embedded = load_inventory(inventory_arg)
    for warning in inventory.warnings:
        # escape: a path like inv[dev].yml or a value like [a] is text, not markup
        stderr().print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False,
                        soft_wrap=True)
    hosts = inventory.select(limit) if limit else list(inventory.hosts.values())
    if not hosts:
        # "in sync" about zero hosts would be a lie a monitor cannot see through.
        raise GpuprovError(f"{inventory.path or 'the inventory'} has no hosts",
                           hint="add hosts under all: hosts: or a group's hosts:")
    plays = load_plays(playbook) if need_plays else []
    return Target(inventory, hosts, embedded, plays)


@functools.cache
def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def run_options(ctx: dict[str, Any], check: bool, hosts: int) -> RunOptions:
    """The run's options from the command's; `hosts`: how many it works on (for auto forks)."""
    forks = resolve_forks(ctx["forks"], hosts)
    if ctx.get("verbose", 0) >= 1:
        # The workers chosen for auto depend on this machine: say them, as pyinfra does.
        stderr().print(f"{hosts} host{'s' if hosts != 1 else ''}, forks: {forks}",
                       highlight=False, markup=False)
    password = None
    if ctx["ask_become_pass"]:
        # Asked once per run, kept in memory, fed to sudo on stdin only.
        password = click.prompt("BECOME password", hide_input=True, err=True)
    return RunOptions(
        check=check, forks=forks.workers, serial=ctx.get("serial"),
        max_fail_percentage=ctx.get("max_fail_percentage"),
        tags=frozenset(split_csv(ctx["tags"])), skip_tags=frozenset(split_csv(ctx["skip_tags"])),
        extra_vars=parse_extra_vars(ctx["extra_vars"]), reboot=ctx.get("reboot", False),
        lock_timeout=ctx.get("lock_timeout", 0.0),
        profile=ctx.get("verbose", 0) >= 1,
        fact_plans=default_cache_dir(),
        connect=ConnectOptions(host_key_checking=host_key_checking(ctx),
                               confirm_host_key=confirm_host_key(),
                               become_password=password,
                               connect_timeout=ctx.get("timeout") or DEFAULT_TIMEOUT))


def host_key_checking(ctx: dict[str, Any]) -> str | None:
    """The policy the flags force on every host; None: each host's own
    (ssh_host_key_checking, ssh_config), strict by default."""
    if ctx.get("accept_new_host_keys"):
        return ACCEPT_NEW
    return STRICT if ctx.get("strict_host_keys") else None


_PROMPT_LOCK = threading.Lock()


def confirm_host_key() -> Confirm | None:
    """ssh's yes/no question about an unknown host key, for a person at a
    terminal only: never in CI, under cron or with stdin redirected."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None

    def ask(question: str) -> bool:
        # Hosts connect in parallel threads: one question at a time.
        with _PROMPT_LOCK:
            answer = click.prompt(question, type=click.Choice(["yes", "no"]),
                                  show_choices=False, err=True, prompt_suffix=" ")
        return bool(answer == "yes")
    return ask


def _one_host_key_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    # Each flag's callback sees the other once it was parsed: the second one
    # to be processed refuses the pair, before any inventory is read.
    other = "strict_host_keys" if param.name == "accept_new_host_keys" else \
        "accept_new_host_keys"
    if value and ctx.params.get(other):
        raise click.UsageError("--accept-new-host-keys and --strict-host-keys contradict "
                               "each other; pass one", ctx)
    return value


#: seconds to wait for a host: the TCP connect and SSH handshake, and the
#: silence (unanswered keepalives) after which a host is declared unreachable
DEFAULT_TIMEOUT = 10.0


def connect_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """-T/--timeout, --accept-new-host-keys / --strict-host-keys, for every
    command that connects to hosts."""
    fn = click.option("-T", "--timeout", type=click.FloatRange(min=1.0),
                      default=DEFAULT_TIMEOUT, show_default=True,
                      help="Seconds to wait for a host to connect, or to answer keepalives "
                      "during the run, before it is reported unreachable.")(fn)
    fn = click.option("--strict-host-keys", is_flag=True, callback=_one_host_key_flag,
                      help="Refuse unknown host keys on every host, even where the "
                      "inventory (ssh_host_key_checking) or ssh_config says accept-new.")(fn)
    return click.option("--accept-new-host-keys", is_flag=True, callback=_one_host_key_flag,
                        help="Record the key of a host not yet in known_hosts (OpenSSH's "
                        "accept-new; default: refuse it). A changed key is always "
                        "refused.")(fn)


def split_csv(values: tuple[str, ...]) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def serial_option(ctx: click.Context, param: click.Parameter,
                  value: str | None) -> int | str | None:
    """--serial, by the same rule as a play's `serial:` (a click callback)."""
    if value is None:
        return None
    try:
        return parse_serial(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def check_writable(path: str | None, option: str) -> None:
    """Refuse a report path that cannot be written before the run, not after it."""
    if path is None:
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise GpuprovError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GpuprovError(f"{option} {path}: directory {parent} is not writable")


def write_file(path: str, write: Callable[[], None]) -> None:
    """Run `write`; an OS error becomes one message, not a traceback."""
    try:
        write()
    except OSError as exc:
        raise GpuprovError(f"cannot write {path}: {exc.strerror or exc}") from None


class ForksParam(click.ParamType):
    """-f/--forks: a host count, or auto."""

    name = "forks"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "N|auto"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or str(value).strip().lower() != AUTO:
            try:
                count = int(value)
            except ValueError:
                self.fail(f"{value!r} is neither a number nor {AUTO}", param, ctx)
            if not 1 <= count <= MAX_FORKS:
                self.fail(f"{count} is not in 1-{MAX_FORKS}", param, ctx)
            return count
        return AUTO


forks_option = click.option(
    "-f", "--forks", type=ForksParam(), default=AUTO, show_default=True,
    help=f"Hosts worked on in parallel: N, or {AUTO}: every host at once, up to what this "
         "machine's open-file limit and memory allow (-v shows the number).")


lock_timeout_option = click.option(
    "--lock-timeout", type=click.FloatRange(0), default=0.0, show_default=True, metavar="SECONDS",
    help="How long to wait for another gpuprov run on a host to finish (its run lock); "
         "after that the host fails as busy and the others go on.")


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every host-running command takes, in Ansible's spelling."""
    decorators: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.argument("inventory", required=False, type=click.Path(dir_okay=False)),
        click.option("-p", "--playbook", type=click.Path(exists=True, dir_okay=False),
                     help="Playbook (default: ./playbooks/site.yml, else the bundled one)."),
        click.option("-l", "--limit", help="Host pattern: names, globs, groups, a:b, a:&b, a:!b."),
        click.option("-t", "--tags", multiple=True, help="Only roles with these tags (a role's "
                     "name is always one of its tags)."),
        click.option("--skip-tags", multiple=True, help="Leave out roles with these tags."),
        click.option("-e", "--extra-vars", multiple=True,
                     help="k=v, 'k=v k2=v2', @file.yml or a YAML mapping; highest precedence."),
        forks_option,
        connect_options,
        click.option("-K", "--ask-become-pass", is_flag=True,
                     help="Ask once for the sudo password (fed on stdin, never argv)."),
        click.option("-v", "--verbose", count=True, help="More detail: -v ok tasks and round "
                     "trips, -vv each command run, -vvv facts scripts and raw output "
                     "(secrets masked)."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def guarded(fn: Callable[..., int]) -> Callable[..., int]:
    """Expected failures -> one readable message and exit 1."""
    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> int:
        try:
            return fn(**kwargs)
        except GpuprovError as exc:
            # escape: file names and values in the message are text, not markup;
            # soft_wrap: a path in a log or CI output is never broken across lines.
            stderr().print(f"[red]error:[/] {escape(str(exc))}", highlight=False,
                            markup=True, soft_wrap=True)
            return EXIT_ERROR
    return wrapper


def report_extra(target: Target, opts: dict[str, Any]) -> dict[str, Any]:
    return {"inventory": str(target.inventory.path) if target.inventory.path else None,
            "playbook": opts.get("playbook"), "limit": opts.get("limit")}
