"""Ansible-compatible YAML inventory -> Host objects with merged vars.

Accepted: `all:` with `hosts:`, `children:`, `vars:`; other top-level
groups (children of all, as in Ansible); nested groups to any depth; a host
in several groups; host ranges (`ws-[01:20].lab`); `group_vars/` and
`host_vars/` beside the inventory file (`<name>.yml|.yaml|.json`, a file
without extension, or a directory `<name>/` whose files load in name order).

Variable precedence inside the inventory (low to high), as in Ansible:
  1. groups ordered by depth below `all` (all=0, its children 1, ...), ties
     by group name; so `all` < parent groups < child groups;
  2. for each group: vars written inline in the inventory first, then
     group_vars/ files (files win, as in Ansible);
  3. the host: inline vars (later definitions of the same host win), then
     host_vars/ files.
Connection settings (address, ssh_user, ssh_port, ssh_private_key_file,
become) come from these vars; gpuprov's own names and Ansible's aliases are
equivalent and the one set at the higher-precedence layer wins.

This module is the inventory's public API (Inventory, Host, Group,
CONNECTION_VARS, expand_host_range); hosts.py holds the Host and Group types
and the connection variables, inventory_loader.py the walk of the YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpuprov.command import MASK, Secret, mask_text
from gpuprov.errors import InventoryError
from gpuprov.model.hosts import CONNECTION_VARS, Group, Host, resolve_connection
from gpuprov.model.inventory_loader import expand_host_range, read_inventory
from gpuprov.model.patterns import select
from gpuprov.model.vars import is_secret_name
from gpuprov.model.yamlfile import did_you_mean

__all__ = ["CONNECTION_VARS", "Group", "Host", "Inventory", "expand_host_range",
           "load_inventory"]


def load_inventory(path: str | Path | None) -> tuple[Inventory, bool]:
    """What a command's INVENTORY argument means: the file given, else
    ./inventory.yml, else this machine (embedded=True). Every command, a
    role's own too, reads it the same way."""
    if path:
        return Inventory.load(path), False
    if Path("inventory.yml").is_file():
        return Inventory.load("inventory.yml"), False
    return Inventory.local(), True


class Inventory:
    """Hosts (ordered as first written) and groups of one inventory."""

    def __init__(self, hosts: dict[str, Host], groups: dict[str, Group],
                 path: Path | None = None, warnings: list[str] | None = None) -> None:
        self.hosts = hosts
        self.groups = groups
        self.path = path
        self.warnings = warnings or []

    @classmethod
    def load(cls, path: str | Path) -> Inventory:
        loaded = read_inventory(Path(path))
        return cls(loaded.hosts, loaded.groups, Path(path), loaded.warnings)

    @classmethod
    def local(cls, vars: Mapping[str, Any] | None = None) -> Inventory:
        """The embedded default: no inventory means this machine, `localhost`."""
        host = Host("localhost", groups=["all", "ungrouped"], vars=dict(vars or {}),
                    connection="local", address="localhost")
        host._layers = dict.fromkeys(host.vars, 0)
        resolve_connection(host)
        host.connection = "local"
        groups = {"all": Group("all", children=["ungrouped"]),
                  "ungrouped": Group("ungrouped", hosts=["localhost"], parents=["all"], depth=1)}
        return cls({"localhost": host}, groups)

    def select(self, pattern: str, allow_empty: bool = False) -> list[Host]:
        """Hosts matching an Ansible --limit pattern, in inventory order."""
        return select(self, pattern, allow_empty=allow_empty)

    def to_list_json(self, mask_secrets: bool = True, only: list[str] | None = None,
                     export: bool = False) -> dict[str, Any]:
        """The shape of `ansible-inventory --list` (secrets masked unless asked):
        `_meta.hostvars` (each host's merged vars), and per group the keys
        `hosts`, `children` (and with `export`, its own `vars`) that are not
        empty; a group left empty is left out, `all` never. `only`: these
        hosts, and the groups that hold them (--limit)."""
        kept = self._kept_groups(only)
        out: dict[str, Any] = {"_meta": {"hostvars": {}}}
        for host in self.hosts.values():
            if only is None or host.name in only:
                out["_meta"]["hostvars"][host.name] = (_masked_vars(host.vars) if mask_secrets
                                                       else dict(host.vars))
        for group in self.groups.values():
            if group.name not in kept:
                continue
            entry: dict[str, Any] = {}
            children = [c for c in group.children if c in kept]
            if children:
                entry["children"] = children
            hosts = [h for h in group.hosts if only is None or h in only]
            if hosts and group.name != "all":
                entry["hosts"] = hosts
            group_vars = {k: v for layer in group.vars for k, v in (layer or {}).items()}
            if export and group_vars:
                entry["vars"] = _masked_vars(group_vars) if mask_secrets else group_vars
            if entry or group.name == "all":
                out[group.name] = entry
        return out

    def host_json(self, name: str) -> dict[str, Any]:
        """One host's merged vars, secrets masked (`ansible-inventory --host`)."""
        host = self.hosts.get(name)
        if host is None:
            where = self.path or "the inventory"
            raise InventoryError(f"no host {name!r} in {where}",
                                 hint=did_you_mean(name, self.hosts))
        return _masked_vars(host.vars)

    def _kept_groups(self, only: list[str] | None) -> set[str]:
        """Groups that hold one of `only` (directly or through a child); all of them
        when `only` is None. `all` is always kept."""
        if only is None:
            return set(self.groups)
        wanted = set(only)
        kept: set[str] = {"all"}

        def holds(name: str, seen: frozenset[str]) -> bool:
            group = self.groups[name]
            # a child's hosts count for the parent; `seen` guards a cycle
            found = bool(wanted & set(group.hosts)) | any(
                [holds(c, seen | {name}) for c in group.children if c not in seen])
            if found:
                kept.add(name)
            return found

        holds("all", frozenset())
        return kept

    def graph(self, group: str = "all", only: list[str] | None = None) -> str:
        """The tree `ansible-inventory --graph` prints (children and hosts sorted);
        `only`: these hosts and the groups that hold them (--limit)."""
        if group not in self.groups:
            raise InventoryError(f"no group named {group!r}",
                                 hint=did_you_mean(group, self.groups))
        kept = self._kept_groups(only)
        lines: list[str] = []

        def walk(name: str, depth: int) -> None:
            prefix = "  |" * depth + "--" if depth else ""
            lines.append(f"{prefix}@{name}:")
            g = self.groups[name]
            for child in sorted(c for c in g.children if c in kept):
                walk(child, depth + 1)
            if name != "all":
                lines.extend("  |" * (depth + 1) + "--" + h for h in sorted(g.hosts)
                             if only is None or h in only)

        walk(group, 0)
        return "\n".join(lines)


def _masked_vars(variables: Mapping[str, Any]) -> dict[str, Any]:
    """A host's variables as written, every secret masked: by its name or its
    !secret tag (at any depth), and its value wherever else it was copied."""
    values = {v for k, v in variables.items() if isinstance(v, str) and is_secret_name(k)}
    values |= set(_secrets_in(variables))

    def mask(value: Any) -> Any:
        if isinstance(value, Secret):
            return MASK
        if isinstance(value, str):
            return mask_text(value, values)
        if isinstance(value, Mapping):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    return {k: MASK if is_secret_name(k) else mask(v) for k, v in variables.items()}


def _secrets_in(value: Any) -> list[str]:
    if isinstance(value, Secret):
        return [value.value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _secrets_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _secrets_in(v)]
    return []
