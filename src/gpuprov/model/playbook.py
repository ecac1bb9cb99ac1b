"""Playbooks (a YAML list of plays) and the role search path.

A play is: name, hosts (a pattern), roles, vars, tags, serial,
max_fail_percentage, reboot. There are no inline tasks, handlers or
gather_facts: tasks are Python in roles/<role>/tasks.py and facts are
always gathered, in one round trip per host.

Roles are searched in order: ./roles (current directory), roles/ beside
the playbook, then the bundled roles shipped with gpuprov. See
`role_search_path()`. `load_plays()` is how commands get their plays:
the playbook found, loaded and its roles resolved in one step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuprov.errors import PlaybookError
from gpuprov.model.paths import bundled_dir, default_playbook, playbook_named
from gpuprov.model.vars import check_var_name
from gpuprov.model.yamlfile import Location, did_you_mean, load_yaml, location

__all__ = [
    "REBOOT_CHOICES",
    "VERIFY_ALWAYS",
    "VERIFY_CHOICES",
    "VERIFY_ON_CHANGE",
    "REBOOT_IF_NEEDED",
    "REBOOT_NEVER",
    "Play",
    "RoleRef",
    "find_playbook",
    "find_role",
    "load_playbook",
    "load_named_plays",
    "load_plays",
    "load_role_defaults",
    "parse_serial",
    "resolve_roles",
    "role_search_path",
]

# A play's, the inventory's or -e's `reboot:`; the executor reads the same names.
REBOOT_NEVER, REBOOT_IF_NEEDED = "never", "if-needed"
REBOOT_CHOICES = (REBOOT_NEVER, REBOOT_IF_NEEDED)
# A play with `verify:` checks what the plays before it did: `on-change` runs it
# on a host only when this run changed something there; the inventory's or -e's
# `verify` overrides it.
VERIFY_ALWAYS, VERIFY_ON_CHANGE = "always", "on-change"
VERIFY_CHOICES = (VERIFY_ALWAYS, VERIFY_ON_CHANGE)
_PLAY_KEYS = ("name", "hosts", "roles", "vars", "tags", "serial", "max_fail_percentage",
              "reboot", "verify")
_ROLE_KEYS = ("role", "name", "vars", "tags")
# Ansible play keys people will carry over, with what to do instead.
_ANSIBLE_HINTS = {
    "tasks": "gpuprov plays have no inline tasks; put them in a role's tasks.py",
    "pre_tasks": "gpuprov plays have no inline tasks; put them in a role's tasks.py",
    "post_tasks": "gpuprov plays have no inline tasks; put them in a role's tasks.py",
    "handlers": "handlers belong to roles (notified from tasks.py)",
    "gather_facts": "facts are always gathered, in one round trip per host; remove this key",
    "become": "set become (or ansible_become) in the inventory instead",
    "remote_user": "set ssh_user (or ansible_user) in the inventory instead",
    "vars_files": "put the variables under vars:, in group_vars/, or pass -e @file.yml",
    "any_errors_fatal": "use max_fail_percentage: 0",
}
_ROLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SERIAL = re.compile(r"([0-9]+)(%?)")


@dataclass
class RoleRef:
    """A role as listed in a play; `path` is set by resolve_roles()."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    file: str | None = None
    line: int | None = None
    path: Path | None = None


@dataclass
class Play:
    name: str
    hosts: str
    roles: list[RoleRef] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    serial: int | str | None = None  # int hosts per batch, or "30%"
    max_fail_percentage: float | None = None
    reboot: str | None = None  # None: not set in the play (default never applies later)
    verify: str | None = None  # None: not a verification play (it always runs)
    file: str | None = None
    line: int | None = None


def find_playbook(path: str | Path | None) -> Path:
    """`path` if given, else ./playbooks/site.yml, else the bundled site.yml."""
    if path:
        return Path(path)
    book = default_playbook()
    if book is None:
        raise PlaybookError("no playbook given and no playbooks/site.yml found",
                            hint="pass -p/--playbook FILE.yml")
    return book


def load_plays(path: str | Path | None) -> list[Play]:
    """The plays a command runs: the playbook find_playbook() picks, loaded,
    every role resolved on role_search_path() (./roles, beside it, bundled)."""
    book = find_playbook(path)
    plays = load_playbook(book)
    resolve_roles(plays, role_search_path(book, bundled_dir("roles")))
    return plays


def load_named_plays(name: str) -> list[Play]:
    """The plays of the playbook a command is built on (verify.yml,
    onboard.yml): ./playbooks/<name> when there is one (a fork wins), else
    the bundled one. The command knows only the playbook's name; the
    playbook names the roles."""
    book = playbook_named(name)
    if book is None:
        raise PlaybookError(f"no playbooks/{name} found (neither ./playbooks nor the "
                            "bundled one)",
                            hint=f"reinstall gpuprov, or write ./playbooks/{name}")
    return load_plays(book)


def load_playbook(path: str | Path) -> list[Play]:
    """Load and validate a playbook; every error names file:line."""
    data = load_yaml(path, PlaybookError)
    if data is None:
        raise PlaybookError("the playbook is empty; expected a list of plays", str(path))
    if not isinstance(data, list):
        raise PlaybookError("a playbook must be a list of plays ('- hosts: ...')",
                            str(path), getattr(data, "line", 1))
    return [_play(item, location(data, i)) for i, item in enumerate(data)]


def _play(data: Any, where: Location) -> Play:
    if not isinstance(data, Mapping):
        raise PlaybookError(f"a play must be a mapping (hosts:, roles:, ...), got "
                            f"{type(data).__name__}", *where)
    for key in data:
        if key not in _PLAY_KEYS:
            hint = _ANSIBLE_HINTS.get(key) or did_you_mean(str(key), _PLAY_KEYS)
            raise PlaybookError(f"unknown play key {key!r} (expected one of "
                                f"{', '.join(_PLAY_KEYS)})", *location(data, key), hint=hint)
    hosts = data.get("hosts")
    if isinstance(hosts, list) and hosts and all(isinstance(h, str) for h in hosts):
        hosts = ",".join(hosts)
    if not isinstance(hosts, str) or not hosts.strip():
        raise PlaybookError("a play needs hosts: a host pattern such as 'all' or 'lab:!ws-03'",
                            *(location(data, "hosts") if "hosts" in data else where))
    name = data.get("name") or hosts
    roles_data = data.get("roles") or []
    if not isinstance(roles_data, list):
        raise PlaybookError("roles must be a list", *location(data, "roles"))
    play = Play(
        name=str(name), hosts=hosts.strip(),
        roles=[_role(item, location(roles_data, i)) for i, item in enumerate(roles_data)],
        vars=_vars(data, "vars"), tags=_tags(data, "tags"),
        serial=_serial(data), max_fail_percentage=_max_fail(data),
        reboot=_choice(data, "reboot", REBOOT_CHOICES),
        verify=_choice(data, "verify", VERIFY_CHOICES), file=where.file, line=where.line,
    )
    return play


def _role(item: Any, where: Location) -> RoleRef:
    if isinstance(item, str):
        return RoleRef(_role_name(item, where), file=where.file, line=where.line)
    if not isinstance(item, Mapping):
        raise PlaybookError("a role must be a name or a mapping with role:", *where)
    for key in item:
        if key not in _ROLE_KEYS:
            raise PlaybookError(f"unknown key {key!r} in role entry (expected role, vars, tags)",
                                *location(item, key),
                                hint=did_you_mean(str(key), _ROLE_KEYS)
                                or "put role variables under vars:")
    name = item.get("role", item.get("name"))
    if not isinstance(name, str):
        raise PlaybookError("a role entry needs role: <name>", *where)
    return RoleRef(_role_name(name, where), vars=_vars(item, "vars"), tags=_tags(item, "tags"),
                   file=where.file, line=where.line)


def _role_name(name: str, where: Location) -> str:
    if not _ROLE_NAME.fullmatch(name):
        raise PlaybookError(f"bad role name {name!r}", *where,
                            hint="a role is named by its directory under roles/, e.g. "
                                 "nvidia_driver")
    return name


def _vars(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlaybookError(f"{key} must be a mapping of variable names to values",
                            *location(data, key))
    for name in value:
        check_var_name(name, location(value, name), PlaybookError)
    return value  # type: ignore[return-value]  # a YamlMap keeps key locations


def _tags(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")  # Ansible accepts "a,b"
    if not isinstance(value, list) or not all(isinstance(t, (str, int)) for t in value):
        raise PlaybookError("tags must be a list of names", *location(data, key))
    return [str(t).strip() for t in value if str(t).strip()]


def _serial(data: Mapping[str, Any]) -> int | str | None:
    value = data.get("serial")
    if value is None:
        return None
    try:
        return parse_serial(value)
    except ValueError as exc:
        raise PlaybookError(f"serial {exc}", *location(data, "serial")) from None


def parse_serial(value: object) -> int | str:
    """A batch size, from a play's `serial:` or from --serial: a host count
    (5, or "5" as a command line gives it) or a whole share of the play's
    hosts ("30%", 1-100). Returns the count as an int, a share as "N%".

    Raises ValueError with the message both callers show, each with its own
    prefix (the play's file:line, or the option's name).
    """
    text = value.strip() if isinstance(value, str) else value
    number: int | None = None
    share = False
    if isinstance(text, int) and not isinstance(text, bool):
        number = text
    elif isinstance(text, str) and (m := _SERIAL.fullmatch(text)):
        number, share = int(m.group(1)), m.group(2) == "%"
    # Ansible reads a share as a whole percentage too; 12.5% or "25 %" are typos here.
    if number is None or number < 1 or (share and number > 100):
        raise ValueError(f"must be a positive number of hosts or a percentage 1-100% like "
                         f"\"30%\", got {value!r}")
    return f"{number}%" if share else number


def _max_fail(data: Mapping[str, Any]) -> float | None:
    value = data.get("max_fail_percentage")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1]
        value = float(value) if re.fullmatch(r"\d+(\.\d+)?", value) else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise PlaybookError(f"max_fail_percentage must be a number 0..100, got {value!r}",
                            *location(data, "max_fail_percentage"))
    return float(value)


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if value not in choices:
        raise PlaybookError(f"{key} must be one of {', '.join(choices)}, got {value!r}",
                            *location(data, key), hint=did_you_mean(str(value), choices))
    return str(value)


def role_search_path(playbook: str | Path | None, bundled: Path | None,
                     cwd: Path | None = None) -> list[Path]:
    """./roles, then roles/ beside the playbook, then the bundled roles (no duplicates)."""
    dirs = [(cwd or Path.cwd()) / "roles"]
    if playbook is not None:
        dirs.append(Path(playbook).resolve().parent / "roles")
    if bundled is not None:
        dirs.append(bundled)
    out: list[Path] = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_role(name: str, search_path: list[Path], where: Location | None = None) -> Path:
    """The first directory `<dir>/<name>` on the search path.

    `where` (the role's file:line in the playbook) is named in the error.
    """
    for d in search_path:
        candidate = d / name
        if candidate.is_dir():
            return candidate
    where = where or Location(None, None)
    known = sorted({p.name for d in search_path if d.is_dir() for p in d.iterdir()
                    if p.is_dir() and not p.name.startswith((".", "_"))})
    searched = ", ".join(str(d) for d in search_path) or "(no directories)"
    raise PlaybookError(f"role {name!r} not found; searched: {searched}", *where,
                        hint=did_you_mean(name, known)
                        or ("available roles: " + ", ".join(known) if known else None))


def resolve_roles(plays: list[Play], search_path: list[Path]) -> None:
    """Set RoleRef.path for every role of every play (errors name file:line)."""
    for play in plays:
        for ref in play.roles:
            ref.path = find_role(ref.name, search_path, Location(ref.file, ref.line))


def load_role_defaults(role_dir: str | Path) -> dict[str, Any]:
    """The role's defaults.yml (lowest precedence vars); {} when it has none."""
    role_dir = Path(role_dir)
    path = role_dir / "defaults.yml"
    if not path.exists() and (role_dir / "defaults.yaml").exists():
        path = role_dir / "defaults.yaml"
    if not path.exists():
        return {}
    data = load_yaml(path, PlaybookError)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PlaybookError("defaults must be a mapping of variable names to values",
                            str(path), getattr(data, "line", 1))
    for name in data:
        check_var_name(name, location(data, name), PlaybookError)
    return data  # type: ignore[return-value]  # a YamlMap keeps key locations
