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
from gpuprov.model.inventory import CONNECTION_VARS, Host, Inventory, load_inventory
from gpuprov.model.playbook import Play, load_plays, parse_serial
from gpuprov.model.vars import parse_extra_vars
from gpuprov.output.report import write_text_atomic


@dataclass
class Target:
    """What a command runs against: the inventory, the selected hosts, the plays."""

    inventory: Inventory
    hosts: list[Host]
    embedded: bool          # no inventory given or found: this machine
    plays: list[Play]


def load_target(inventory_arg: str | None, limit: str | None, playbook: str | None,
            need_plays: bool = True, login: dict[str, Any] | None = None) -> Target:
    """`login`: the options of a command that connects (default: the running
    command's, when it takes connect_options): its -u/--private-key override
    every host's, and the key files of the selected hosts are checked before
    any connection."""
    if login is None:
        login = _connecting_command_options()
    inventory, embedded = load_inventory(inventory_arg)
    overrides = login_overrides(login or {})
    if overrides:
        # every host, not only the selected: a play's pattern picks from the inventory
        inventory.hosts = {name: host.with_extra_vars(overrides)
                           for name, host in inventory.hosts.items()}
    for warning in inventory.warnings:
        # escape: a path like inv[dev].yml or a value like [a] is text, not markup
        stderr().print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False,
                        soft_wrap=True)
    hosts = inventory.select(limit) if limit else list(inventory.hosts.values())
    if not hosts:
        # "in sync" about zero hosts would be a lie a monitor cannot see through.
        raise GpuprovError(f"{inventory.path or 'the inventory'} has no hosts",
                           hint="add hosts under all: hosts: or a group's hosts:")
    if login is not None:
        check_key_files(hosts, inventory, bool(overrides.get("ssh_private_key_file")))
    plays = load_plays(playbook) if need_plays else []
    return Target(inventory, hosts, embedded, plays)


def _connecting_command_options() -> dict[str, Any] | None:
    # Every connecting command takes connect_options (-T among them): reading
    # them here keeps -u/--private-key and the key check the same for all.
    ctx = click.get_current_context(silent=True)
    if ctx is None or "timeout" not in ctx.params:
        return None
    return ctx.params


def login_overrides(opts: dict[str, Any]) -> dict[str, str]:
    """-u/--user and --private-key as connection variables above the inventory's
    (like ansible's -u and --private-key, but winning over ansible_user too)."""
    out = {}
    if opts.get("user"):
        out["ssh_user"] = str(opts["user"])
    if opts.get("private_key"):
        out["ssh_private_key_file"] = str(opts["private_key"])
    return out


def check_key_files(hosts: list[Host], inventory: Inventory, from_option: bool) -> None:
    """A key file that is missing or unreadable, found now (naming the host and
    where it was set) rather than as a refused login after the connect."""
    for host in hosts:
        key = host.ssh_private_key_file
        if host.connection != "ssh" or not key or "{{" in key:
            continue
        path = Path(key).expanduser()
        problem = ("does not exist" if not path.exists() else
                   "is not a file" if not path.is_file() else
                   "is not readable" if not os.access(path, os.R_OK) else None)
        if problem is None:
            continue
        if from_option:
            raise GpuprovError(f"--private-key {key}: the key file {problem}",
                               hint="give the path of a private key, e.g. ~/.ssh/id_ed25519")
        name, where = key_origin(host, inventory)
        raise GpuprovError(f"{where}: {host.name}: {name} {key}: the key file {problem}",
                           hint="fix the path, or remove the variable to use ssh-agent "
                                "and ~/.ssh/config")


def key_origin(host: Host, inventory: Inventory) -> tuple[str, str]:
    """The variable that set a host's key file and its file:line (the inventory's
    path when the line is not known)."""
    for name in ("ssh_private_key_file", *CONNECTION_VARS["ssh_private_key_file"]):
        if name in host.vars and str(host.vars[name]) == host.ssh_private_key_file:
            where = host.var_origins.get(name)
            if where is not None and where.file:
                return name, str(where)
            return name, str(inventory.path or "the inventory")
    return "ssh_private_key_file", str(inventory.path or "the inventory")


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
    password = login_password = None
    if ctx.get("ask_pass"):
        # Asked once per run, kept in memory, tried after the keys.
        login_password = click.prompt("SSH password", hide_input=True, err=True)
    if ctx.get("ask_become_pass"):
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
                               become_password=password, ssh_password=login_password,
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


timeout_option = click.option(
    "-T", "--timeout", type=click.FloatRange(min=1.0), default=DEFAULT_TIMEOUT,
    show_default=True, help="Seconds to wait for a host to connect, or to answer keepalives "
    "during the run, before it is reported unreachable.")


def connect_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How to reach and log in to the hosts, for every command that connects:
    -T/--timeout, -u/--user, --private-key, -k/--ask-pass, and the host key
    policy (--accept-new-host-keys / --strict-host-keys)."""
    decorators: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("-u", "--user", metavar="USER",
                     help="Log in as USER on every host (overrides ssh_user/ansible_user "
                     "and ~/.ssh/config)."),
        click.option("--private-key", metavar="FILE", type=click.Path(dir_okay=False),
                     help="Log in with this private key on every host (overrides "
                     "ssh_private_key_file/ansible_ssh_private_key_file)."),
        click.option("-k", "--ask-pass", is_flag=True,
                     help="Ask once for the SSH login password (tried after the keys)."),
        timeout_option,
        click.option("--strict-host-keys", is_flag=True, callback=_one_host_key_flag,
                     help="Refuse unknown host keys on every host, even where the "
                     "inventory (ssh_host_key_checking) or ssh_config says accept-new."),
        click.option("--accept-new-host-keys", is_flag=True, callback=_one_host_key_flag,
                     help="Record the key of a host not yet in known_hosts (OpenSSH's "
                     "accept-new; default: refuse it). A changed key is always refused."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


become_pass_option = click.option(
    "-K", "--ask-become-pass", is_flag=True,
    help="Ask once for the sudo password (fed to sudo on stdin, never in argv).")


def inventory_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    """[INVENTORY] and -i/--inventory INVENTORY (Ansible's spelling): one or the
    other, or both naming the same file (guarded() merges them)."""
    fn = click.option("-i", "--inventory", "inventory_opt", metavar="INVENTORY",
                      type=click.Path(dir_okay=False),
                      help="The inventory file, as the INVENTORY argument (default: "
                      "./inventory.yml, else this machine).")(fn)
    return click.argument("inventory", required=False, type=click.Path(dir_okay=False))(fn)


def merge_inventory_option(kwargs: dict[str, Any]) -> None:
    """-i INVENTORY into the INVENTORY argument; two different ones are a usage error."""
    if "inventory_opt" not in kwargs:
        return
    given, positional = kwargs.pop("inventory_opt"), kwargs.get("inventory")
    if given and positional and Path(given) != Path(positional):
        raise click.UsageError(f"two inventories: {positional} (argument) and -i {given}; "
                               "give one")
    kwargs["inventory"] = positional or given


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


def emit_report(text: str, output: str | None, mode: int) -> None:
    """A report to `output` (-o FILE) atomically, so a monitor never reads half
    a file, else to stdout."""
    if output:
        write_file(output, lambda: write_text_atomic(output, text, mode))
    else:
        click.echo(text, nl=not text.endswith("\n"))


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
        inventory_argument,
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
        become_pass_option,
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
        merge_inventory_option(kwargs)
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
