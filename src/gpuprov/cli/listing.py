"""ansible-playbook's looks before a run, for apply and drift-check:
--list-hosts, --list-tasks, --list-tags and --syntax-check. They read the
inventory, the playbook and the roles on this machine and connect to no host."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gpuprov.cli.common import split_csv
from gpuprov.cli.exit_codes import EXIT_OK
from gpuprov.engine.roles import load_role
from gpuprov.engine.selection import check_tags, role_selected, role_tags
from gpuprov.model.inventory import Inventory, load_inventory
from gpuprov.model.playbook import Play, find_playbook, load_plays
from gpuprov.model.vars import parse_extra_vars

_FLAGS = ("syntax_check", "list_hosts", "list_tasks", "list_tags")


def listing_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The four flags, each connecting to no host."""
    decorators = [
        click.option("--list-hosts", is_flag=True, help="List each play's hosts (after "
                     "-l) and exit; connects to nothing."),
        click.option("--list-tasks", is_flag=True, help="List each play's roles that "
                     "would run (after -t/--skip-tags), with their tags, handlers and "
                     "what each does (its tasks.py docstring), and exit. A role's "
                     "tasks are planned from the host's facts, so single tasks show in a "
                     "run's -v output, not here."),
        click.option("--list-tags", is_flag=True, help="List the tags of each play's roles "
                     "and exit."),
        click.option("--syntax-check", is_flag=True, help="Parse the inventory, the "
                     "playbook, its roles' defaults.yml and tasks.py, and -e; exit 0 "
                     "(syntax ok) or 1 naming file:line. Connects to nothing."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def list_or_check(opts: dict[str, Any]) -> int | None:
    """The exit code when one of the flags was given (the run is not made);
    None otherwise. Errors are GpuprovErrors (file:line), as for a run."""
    if not any(opts.get(flag) for flag in _FLAGS):
        return None
    inventory, _ = load_inventory(opts["inventory"])
    book = find_playbook(opts["playbook"])
    plays = load_plays(book)
    tags, skip = split_csv(opts["tags"]), split_csv(opts["skip_tags"])
    check_tags(plays, [*tags, *skip])
    if opts.get("syntax_check"):
        parse_extra_vars(opts["extra_vars"])
        roles = {ref.path: ref.name for play in plays for ref in play.roles if ref.path}
        for path, name in roles.items():
            load_role(name, path)   # defaults.yml parsed, tasks.py imported
        where = str(inventory.path) if inventory.path else "no inventory (this machine)"
        click.echo(f"syntax ok: {where}, {book} ({len(plays)} play"
                   f"{'s' if len(plays) != 1 else ''}, {len(roles)} role"
                   f"{'s' if len(roles) != 1 else ''})")
    if any(opts.get(flag) for flag in _FLAGS[1:]):
        click.echo(f"playbook: {book}")
        limited = ({h.name for h in inventory.select(opts["limit"])} if opts["limit"]
                   else None)
        for number, play in enumerate(plays, 1):
            click.echo("\n".join(_play_lines(number, play, inventory, limited, opts,
                                             tags, skip)))
    return EXIT_OK


def _play_lines(number: int, play: Play, inventory: Inventory, limited: set[str] | None,
                opts: dict[str, Any], tags: list[str], skip: list[str]) -> list[str]:
    lines = [f"\n  play #{number} ({play.hosts}): {play.name}\tTAGS: [{', '.join(play.tags)}]"]
    if opts.get("list_hosts"):
        hosts = [h.name for h in inventory.select(play.hosts, allow_empty=True)
                 if limited is None or h.name in limited]
        lines.append(f"    pattern: {play.hosts}")
        lines.append(f"    hosts ({len(hosts)}):")
        lines.extend(f"      {name}" for name in hosts)
    selected = [ref for ref in play.roles if role_selected(play, ref, tags, skip)]
    if opts.get("list_tasks"):
        lines.append("    roles:")
        for ref in selected:
            role_tag_list = ", ".join(sorted(role_tags(play, ref)))
            lines.append(f"      {ref.name}\tTAGS: [{role_tag_list}]")
            summary = _summary(ref.name, ref.path) if ref.path else ""
            if summary:
                lines.append(f"        {summary}")
            handlers = sorted(load_role(ref.name, ref.path).handlers) if ref.path else []
            if handlers:
                lines.append(f"        handlers: {', '.join(handlers)}")
    if opts.get("list_tags"):
        found = sorted({t for ref in selected for t in role_tags(play, ref)})
        lines.append(f"    TASK TAGS: [{', '.join(found)}]")
    return lines


def _summary(name: str, role_dir: Path) -> str:
    """The first paragraph of a role's tasks.py docstring (what the role does),
    without the role's name it starts with."""
    try:
        doc = ast.get_docstring(ast.parse((role_dir / "tasks.py").read_text("utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    return text.removeprefix(f"{name}: ")
