"""`gpuprov onboard HOST [INVENTORY] --group G`: the steps of
engine/onboard.py, with what a person sees in between."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from gpuprov.cli.common import guarded, inventory_argument, stderr, stdout, timeout_option
from gpuprov.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, epilog, host_code, worst
from gpuprov.cli.role_commands import role_host_notes
from gpuprov.connectors.hostkeys import STRICT
from gpuprov.engine.connect import ConnectOptions
from gpuprov.engine.executor import Executor, RunOptions
from gpuprov.engine.onboard import (
    OnboardError,
    OnboardOptions,
    bootstrap,
    commit_inventory,
    first_contact,
    key_login_problem,
    stage,
)
from gpuprov.engine.verify import run_verify
from gpuprov.errors import GpuprovError
from gpuprov.model.inventory import Inventory
from gpuprov.model.playbook import find_playbook, load_plays
from gpuprov.model.vars import parse_extra_vars
from gpuprov.model.yamlfile import close_names
from gpuprov.output.progress import Progress
from gpuprov.output.report import render_recap
from gpuprov.output.verify import verify_rows, verify_table


@click.command(epilog=epilog("onboard"))
@click.argument("host")
@inventory_argument
@click.option("-g", "--group", required=True, help="Inventory group: lab, cloud, cluster... "
              "(one the inventory has, unless --new-group).")
@click.option("--new-group", is_flag=True, help="Create the group when the inventory has "
              "none of that name.")
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
@timeout_option
@click.option("-p", "--playbook", type=click.Path(exists=True, dir_okay=False))
@click.option("-e", "--extra-vars", multiple=True)
@click.option("--reboot", is_flag=True, help="Reboot if the new driver needs it, and wait.")
@click.option("--dry-run", is_flag=True, help="Show the inventory change and the steps; "
              "touch nothing.")
@guarded
def onboard(**opts: Any) -> int:
    """Take a new machine (password login, or a cloud key) to a verified GPU
    host in the inventory: host key, admin user + key + sudo, inventory
    entry, the site playbook, verify. Re-run to continue after a failure."""
    return onboard_flow(opts, stdout(), stderr())


def onboard_flow(o: dict[str, Any], out: Console, err: Console) -> int:
    """Take a new machine (password login, or a cloud key) to a verified GPU
    host in the inventory: host key, admin user + key + sudo, inventory
    entry, the site playbook, verify. Re-run to continue after a failure."""
    path = Path(o["inventory"] or "inventory.yml")
    opts = OnboardOptions(
        name=o["host"], group=o["group"], inventory=path, address=o["address"],
        login_user=o["login_user"], user=o["user"], key_file=o["key_file"],
        host_key_fingerprint=o["host_key_fingerprint"], sudo=o["sudo"], reboot=o["reboot"],
        connect_timeout=o["timeout"],
        extra_vars=parse_extra_vars(o["extra_vars"]),
        confirm=(lambda q: click.confirm(q, err=True)) if sys.stdin.isatty() else None)
    if path.is_file():
        _known_group(Inventory.load(path), opts.group, o["new_group"])
    staged = stage(opts)
    if o["dry_run"]:
        out.print(staged.diff or f"{path}: {opts.name} is already in group {opts.group}",
                  markup=False)
        out.print(f"would: check and record {opts.name}'s host key; set up key login + sudo "
                  "unless it works; write the inventory (with a backup); run the site "
                  "playbook on it; verify", markup=False)
        return EXIT_OK

    out.print(f"1/5 first contact: {first_contact(staged.host, opts)}", markup=False)
    become = _password(o["ask_become_pass"], None, "sudo password")
    problem = key_login_problem(staged.host, become, opts.connect_timeout)
    if problem is None:
        out.print("2/5 access: key login and sudo already work", markup=False)
    else:
        opts.password = _password(o["ask_pass"], o["password_file"], "login password")
        opts.become_password = become
        with Progress(out) as opts.progress:
            setup = bootstrap(staged, opts)
        host_result = setup.host(opts.name)
        if host_result.failed or host_result.unreachable:
            raise OnboardError(f"setting up access failed; nothing else was changed:\n"
                               f"{host_result.unreachable or host_result.error or _errors(setup)}",
                               hint=None if opts.password else "log in with a password: -k "
                               "(asks once) or --password-file")
        again = key_login_problem(staged.host, become, opts.connect_timeout)
        if again is not None:
            raise OnboardError(f"{opts.name}: a new key login + sudo still fails after setting "
                               f"up access ({again}); the inventory was not changed")
        out.print(f"2/5 access: {staged.host.ssh_user} logs in with the key and has sudo",
                  markup=False)

    backup = commit_inventory(staged)
    if backup is None:
        out.print(f"3/5 inventory: {opts.name} already in group {opts.group}", markup=False)
    else:
        out.print(f"3/5 inventory: added {opts.name} to group {opts.group} in {path} "
                  f"(backup: {backup.name})", markup=False)
        out.print(staged.diff, markup=False)

    inventory = Inventory.load(path)
    host = inventory.hosts[opts.name]
    options = RunOptions(reboot=opts.reboot,
                         extra_vars={**opts.connection_vars(), **opts.extra_vars},
                         connect=ConnectOptions(host_key_checking=STRICT,
                                                become_password=become,
                                                connect_timeout=opts.connect_timeout))
    book = find_playbook(o["playbook"])
    plays = load_plays(book)
    out.print(f"4/5 site playbook {book}", markup=False)
    with Progress(out) as progress:
        run = Executor(inventory, plays, [host], options, progress).run("apply")
    render_recap(run, out)
    if run.any_failed or run.any_unreachable:
        err.print(f"onboard: the site playbook failed on {opts.name}; fix the cause and "
                  "rerun gpuprov onboard (it continues)", markup=False)
        return EXIT_FAILED if run.any_failed else EXIT_UNREACHABLE

    out.print("5/5 verify", markup=False)
    # A new driver may need the reboot first: verify then says "reboot pending".
    options.extra_vars = {"verify_fail_if_reboot_pending": False, **options.extra_vars}
    rows = verify_rows(run_verify(inventory, [host], options))
    verify_table(rows, out)
    result = run.host(opts.name)
    by_role: dict[str, int] = {}
    for task in result.tasks:
        if task.status == "changed" and not task.handler:
            by_role[task.role] = by_role.get(task.role, 0) + 1
    changed = ", ".join(f"{role} ({n})" for role, n in by_role.items()) or "nothing (in sync)"
    out.print(f"\n{opts.name}: changed by role: {changed}; "
              f"reboot pending: {'yes' if result.reboot_pending else 'no'}", markup=False)
    # what the site playbook's roles have to tell a person about the host (how to
    # reach what they set up there): a role's commands.py host_notes()
    for note in role_host_notes(plays, inventory, opts.name):
        out.print(note, markup=False)
    return worst(host_code(failed=r["status"] == "fail", unreachable=r["status"] == "unreachable")
                 for r in rows)


def _known_group(inventory: Inventory, group: str, new_group: bool) -> None:
    """A --group the inventory lacks is a typo more often than a plan: a new
    group is made only when asked for (--new-group)."""
    if group in inventory.groups or new_group:
        return
    near = close_names(group, inventory.groups)
    raise GpuprovError(
        f"{inventory.path}: no group {group!r} (groups: "
        f"{', '.join(g for g in inventory.groups if g not in ('all', 'ungrouped')) or 'none'})",
        hint=(f"did you mean {' or '.join(repr(n) for n in near)}? " if near else "")
        + f"pass --new-group to create {group!r}")


def _password(ask: bool, path: str | None, what: str) -> str | None:
    if path:
        with open(path) as stream:
            return stream.readline().rstrip("\n")
    if ask:
        return click.prompt(what.capitalize(), hide_input=True, err=True)
    return None   # key login only (a cloud image's default user); -k asks for a password


def _errors(run: Any) -> str:
    return "\n".join(t.error for h in run.hosts.values() for t in h.tasks if t.error)
