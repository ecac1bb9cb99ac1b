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
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gpuprov.errors import InventoryError
from gpuprov.model.patterns import select
from gpuprov.model.vars import HostVars, check_var_name, is_secret_name, magic_vars
from gpuprov.model.yamlfile import (
    Location,
    Secret,
    YamlMap,
    close_names,
    did_you_mean,
    load_yaml,
    location,
)

__all__ = ["CONNECTION_VARS", "Group", "Host", "Inventory", "expand_host_range"]

# gpuprov name -> Ansible aliases (the older ansible_ssh_* spellings too).
CONNECTION_VARS: dict[str, tuple[str, ...]] = {
    "address": ("ansible_host", "ansible_ssh_host"),
    "ssh_user": ("ansible_user", "ansible_ssh_user"),
    "ssh_port": ("ansible_port", "ansible_ssh_port"),
    "ssh_private_key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "become": ("ansible_become",),
    "connection": ("ansible_connection",),
}

# Valid Ansible connection vars gpuprov does not use. The function returns a
# warning only when ignoring the value changes what happens on the host.
_IGNORED_ANSIBLE_VARS: dict[str, Any] = {
    "ansible_python_interpreter": lambda v: None,  # no Python needed on targets
    "ansible_shell_executable": lambda v: None,
    "ansible_ssh_pipelining": lambda v: None,
    "ansible_pipelining": lambda v: None,
    "ansible_timeout": lambda v: None,
    "ansible_host_key_checking": lambda v: None if v is not False else
        "is ignored: host keys are always verified (accept-new by default)",
    "ansible_become_method": lambda v: None if v == "sudo" else
        "is not supported: gpuprov becomes root with sudo only",
    "ansible_become_user": lambda v: None if v == "root" else
        "is not supported: roles run as root via sudo",
    "ansible_become_password": lambda v: "is ignored: use --ask-become-pass (asked once per run)",
    "ansible_become_pass": lambda v: "is ignored: use --ask-become-pass (asked once per run)",
    "ansible_sudo_pass": lambda v: "is ignored: use --ask-become-pass (asked once per run)",
    "ansible_password": lambda v: "is ignored: gpuprov logs in with SSH keys or an agent only",
    "ansible_ssh_pass": lambda v: "is ignored: gpuprov logs in with SSH keys or an agent only",
    "ansible_ssh_common_args": lambda v: "is ignored: put SSH options in ~/.ssh/config",
    "ansible_ssh_extra_args": lambda v: "is ignored: put SSH options in ~/.ssh/config",
    "ansible_ssh_args": lambda v: "is ignored: put SSH options in ~/.ssh/config",
    "ansible_shell_type": lambda v: None if v == "sh" else "is not supported: targets use POSIX sh",
}
_KNOWN_VARS = [n for own, al in CONNECTION_VARS.items() for n in (own, *al)] + list(
    _IGNORED_ANSIBLE_VARS)
_GROUP_KEYS = ("hosts", "children", "vars")
_CONNECTIONS = {"ssh": "ssh", "smart": "ssh", "paramiko": "ssh", "local": "local"}
_YAML_EXT = (".yml", ".yaml", ".json")


@dataclass
class Host:
    """One target machine; `vars` are its merged inventory vars."""

    name: str
    groups: list[str] = field(default_factory=lambda: ["all"])  # low to high precedence
    vars: dict[str, Any] = field(default_factory=dict)
    address: str = ""  # what to connect to; the name unless address/ansible_host is set
    ssh_user: str | None = None  # None: ~/.ssh/config or the local user decides
    ssh_port: int | None = None  # None: ~/.ssh/config or 22
    ssh_private_key_file: str | None = None
    become: bool | None = None  # None: not set in the inventory; the executor decides
    connection: str = "ssh"  # "ssh" or "local"
    var_origins: dict[str, Location] = field(default_factory=dict, repr=False)
    file: str | None = None
    line: int | None = None
    _layers: dict[str, int] = field(default_factory=dict, repr=False)  # var -> layer index

    def __post_init__(self) -> None:
        if not self.address:
            self.address = self.name

    def with_extra_vars(self, extra_vars: Mapping[str, Any]) -> Host:
        """A copy with -e vars on top, connection settings re-resolved (-e wins)."""
        top = max(self._layers.values(), default=0) + 1
        host = replace(self, vars={**self.vars, **extra_vars},
                       var_origins={**self.var_origins,
                                    **{k: Location(None, None) for k in extra_vars}},
                       _layers={**self._layers, **dict.fromkeys(extra_vars, top)},
                       address="")
        host.address = host.name
        _resolve_connection(host)
        return host


@dataclass
class Group:
    name: str
    hosts: list[str] = field(default_factory=list)  # hosts listed directly in this group
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: list[Mapping[str, Any]] = field(default_factory=list)  # layers, low to high
    depth: int = 0
    file: str | None = None
    line: int | None = None


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
        loader = _Loader(Path(path))
        loader.run()
        return cls(loader.hosts, loader.groups, Path(path), loader.warnings)

    @classmethod
    def local(cls, vars: Mapping[str, Any] | None = None) -> Inventory:
        """The embedded default: no inventory means this machine, `localhost`."""
        host = Host("localhost", groups=["all", "ungrouped"], vars=dict(vars or {}),
                    connection="local", address="localhost")
        host._layers = dict.fromkeys(host.vars, 0)
        _resolve_connection(host)
        host.connection = "local"
        groups = {"all": Group("all", children=["ungrouped"]),
                  "ungrouped": Group("ungrouped", hosts=["localhost"], parents=["all"], depth=1)}
        return cls({"localhost": host}, groups)

    def select(self, pattern: str, allow_empty: bool = False) -> list[Host]:
        """Hosts matching an Ansible --limit pattern, in inventory order."""
        return select(self, pattern, allow_empty=allow_empty)

    def to_list_json(self, mask_secrets: bool = True) -> dict[str, Any]:
        """The shape of `ansible-inventory --list` (secrets masked unless asked)."""
        out: dict[str, Any] = {"_meta": {"hostvars": {}}}
        for host in self.hosts.values():
            out["_meta"]["hostvars"][host.name] = {
                k: ("********" if mask_secrets and (is_secret_name(k) or isinstance(v, Secret))
                    else v) for k, v in host.vars.items()}
        for group in self.groups.values():
            entry: dict[str, Any] = {}
            if group.children:
                entry["children"] = list(group.children)
            if group.hosts and group.name != "all":
                entry["hosts"] = list(group.hosts)
            if entry or group.name == "all":
                out[group.name] = entry
        return out

    def graph(self, group: str = "all") -> str:
        """The tree `ansible-inventory --graph` prints (children and hosts sorted)."""
        if group not in self.groups:
            raise InventoryError(f"no group named {group!r}",
                                 hint=did_you_mean(group, self.groups))
        lines: list[str] = []

        def walk(name: str, depth: int) -> None:
            prefix = "  |" * depth + "--" if depth else ""
            lines.append(f"{prefix}@{name}:")
            g = self.groups[name]
            for child in sorted(g.children):
                walk(child, depth + 1)
            if name != "all":
                lines.extend("  |" * (depth + 1) + "--" + h for h in sorted(g.hosts))

        walk(group, 0)
        return "\n".join(lines)


def check_vars(data: Any, what: str, warnings: list[str], where: Location) -> None:
    """Validate one vars mapping as written (inline or in a *_vars file).

    Typos of connection variables are errors: a misspelt ansible_host would
    otherwise send gpuprov to the wrong machine (the host's name) silently.
    """
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise InventoryError(f"{what} must be a mapping of variable names to values, "
                             f"got {_kind(data)}", *where)
    for key, value in data.items():
        where = location(data, key)
        check_var_name(key, where)
        if key in _IGNORED_ANSIBLE_VARS:
            note = _IGNORED_ANSIBLE_VARS[key](value)
            if note:
                warnings.append(f"{where}: {key} {note}")
        elif key not in _KNOWN_VARS:
            near = _typo_of(key)
            if near:
                raise InventoryError(f"unknown connection variable {key!r} in {what}", *where,
                                     hint=did_you_mean(key, near))
        if key in ("ssh_port", "ansible_port", "ansible_ssh_port"):
            _port(value, key, where)
        elif key in ("become", "ansible_become"):
            _bool(value, key, where)
        elif (key in ("connection", "ansible_connection") and not _is_template(value)
              and (not isinstance(value, str) or value not in _CONNECTIONS)):
            warnings.append(f"{where}: {key}={value!r} is not supported; gpuprov uses ssh")


@functools.lru_cache(maxsize=8192)
def _typo_of(key: str) -> tuple[str, ...]:
    # Cached: a fleet repeats the same few var names on every host.
    return tuple(close_names(key, _KNOWN_VARS, fuzzy=False))


def _resolve_connection(host: Host) -> None:
    """Fill the connection fields from the merged vars (higher layer wins)."""
    rendered: HostVars | None = None
    for own, aliases in CONNECTION_VARS.items():
        present = [n for n in (own, *aliases) if n in host.vars]
        if not present:
            continue
        # max() keeps the first of equal layers: the own name beats an alias.
        name = max(present, key=lambda n: host._layers.get(n, 0))
        value = host.vars[name]
        if _is_template(value):
            rendered = rendered or HostVars({**magic_vars(host), **host.vars}, host.name,
                                            origins=host.var_origins)
            value = rendered[name]
        where = host.var_origins.get(name, Location(None, None))
        if own == "ssh_port":
            host.ssh_port = _port(value, name, where)
        elif own == "become":
            host.become = _bool(value, name, where)
        elif own == "connection":
            host.connection = _CONNECTIONS.get(str(value), "ssh")
        elif value is not None:
            setattr(host, own, str(value))


def _port(value: Any, name: str, where: Location) -> int | None:
    if _is_template(value) or value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # -e ssh_port=2222 arrives as a string
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InventoryError(f"{name} must be a port number 1..65535, got {value!r}", *where)
    return value


def _bool(value: Any, name: str, where: Location) -> bool | None:
    if _is_template(value) or value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # -e become=true arrives as a string
    raise InventoryError(f"{name} must be true or false, got {value!r}", *where,
                         hint="yes/no/on/off are strings in gpuprov, not booleans")


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")


_NOWHERE = Location(None, None)
_HOST_PORT = re.compile(r"([^:\[\]]+):([0-9]+)")  # not IPv6, whose colons come in groups


def expand_host_range(name: str, where: Location = _NOWHERE) -> list[str]:
    """`ws-[01:03].lab` -> ws-01.lab, ws-02.lab, ws-03.lab (Ansible host ranges)."""
    m = _RANGE.search(name)
    if not m:
        return [name]
    start, end, step = m.group(1), m.group(2), int(m.group(3) or 1)
    head, tail = name[: m.start()], name[m.end():]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step or 1)]
    elif len(start) == len(end) == 1 and start.isalpha() and end.isalpha():
        items = [chr(i) for i in range(ord(start), ord(end) + 1, step or 1)]
    else:
        raise InventoryError(f"bad host range in {name!r}", *where,
                             hint="use [01:20] (numbers) or [a:f] (single letters)")
    if not items:
        raise InventoryError(f"empty host range in {name!r}", *where)
    return [n for item in items for n in expand_host_range(head + item + tail, where)]


def _group_keys_error(key: Any, group: str, data: YamlMap) -> InventoryError:
    return InventoryError(
        f"unknown key {key!r} in group {group!r} (expected hosts, children or vars)",
        *location(data, key),
        hint=did_you_mean(str(key), _GROUP_KEYS)
        or "a group has only hosts:, children: and vars:; put variables under vars:")


class _Loader:
    """One pass over the inventory file, then the *_vars files beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = str(path)
        self.groups: dict[str, Group] = {"all": Group("all")}
        self.hosts: dict[str, Host] = {}
        self.host_vars: dict[str, list[Mapping[str, Any]]] = {}
        self.edges: dict[tuple[str, str], Location] = {}
        self.warnings: list[str] = []

    def run(self) -> None:
        data = load_yaml(self.path)
        if data is None:
            self.warnings.append(f"{self.file}: the inventory is empty")
            data = {}
        if not isinstance(data, Mapping):
            raise InventoryError(f"an inventory must be a mapping with 'all:' at the top, "
                                 f"got {_kind(data)}", self.file, getattr(data, "line", 1))
        for name, body in data.items():
            if name in _GROUP_KEYS:
                raise InventoryError(f"'{name}:' at the top level must be inside a group",
                                     *location(data, name),
                                     hint=f"start the file with 'all:' and indent '{name}:' "
                                          "under it")
            self.group(name, body, None if name == "all" else "all", location(data, name))
        self.check_cycles()
        # Ansible's implicit group for hosts that are in no group but all.
        ungrouped = self.groups.setdefault("ungrouped", Group("ungrouped", parents=["all"]))
        if "ungrouped" not in self.groups["all"].children:
            self.groups["all"].children.insert(0, "ungrouped")
        self.set_depths()
        in_groups = {h for name, g in self.groups.items() if name != "all" for h in g.hosts}
        ungrouped.hosts.extend(h for h in self.hosts if h not in in_groups
                               and h not in ungrouped.hosts)
        self.load_vars_dir("group_vars", self.groups, lambda name, data: self.groups[name].vars)
        self.load_vars_dir("host_vars", self.hosts, lambda name, data: self.host_vars[name])
        for name, host in self.hosts.items():
            if name in self.groups:
                raise InventoryError(f"host {name!r} has the same name as a group", host.file,
                                     host.line, hint="patterns and --limit could not tell "
                                     "them apart; rename the host or the group")
            self.finish_host(host)

    def group(self, name: Any, body: Any, parent: str | None, where: Location) -> None:
        if not isinstance(name, str) or not name:
            raise InventoryError(f"group name must be a string, got {name!r}", *where)
        if name == "all" and parent is not None:
            raise InventoryError("'all' cannot be a child of another group", *where)
        group = self.groups.setdefault(name, Group(name, file=where.file, line=where.line))
        if group.file is None:
            group.file, group.line = where
        if parent is not None:
            self.edges.setdefault((parent, name), where)
            if name not in self.groups[parent].children:
                self.groups[parent].children.append(name)
            if parent not in group.parents:
                group.parents.append(parent)
        if body is None:
            return
        if not isinstance(body, Mapping):
            raise InventoryError(f"group {name!r} must be a mapping with hosts:, children: "
                                 f"or vars:, got {_kind(body)}", *where)
        for key in body:
            if key not in _GROUP_KEYS:
                raise _group_keys_error(key, name, body)
        if body.get("vars") is not None:
            check_vars(body["vars"], f"vars of group {name!r}", self.warnings,
                       location(body, "vars"))
            group.vars.append(body["vars"])
        self.group_hosts(group, body.get("hosts"), location(body, "hosts"))
        children = body.get("children")
        if children is None:
            return
        if not isinstance(children, Mapping):
            raise InventoryError(f"children of group {name!r} must be a mapping of group "
                                 f"names, got {_kind(children)}", *location(body, "children"),
                                 hint="write each child group as 'lab:' on its own line, "
                                      "not '- lab'")
        for child, child_body in children.items():
            self.group(child, child_body, name, location(children, child))

    def group_hosts(self, group: Group, hosts: Any, where: Location) -> None:
        if hosts is None:
            return
        if not isinstance(hosts, Mapping):
            raise InventoryError(f"hosts of group {group.name!r} must be a mapping of host "
                                 f"names, got {_kind(hosts)}", *where,
                                 hint="write each host as 'ws-01:' (a key), not '- ws-01'")
        for raw_name, body in hosts.items():
            at = location(hosts, raw_name)
            if not isinstance(raw_name, (str, int)) or isinstance(raw_name, bool):
                raise InventoryError(f"host name must be a string, got {raw_name!r}", *at)
            if body is not None and not isinstance(body, Mapping):
                raise InventoryError(f"host {raw_name!r} must be followed by a mapping of "
                                     f"variables or nothing, got {_kind(body)}", *at,
                                     hint=f"write '{raw_name}:' alone, or with indented "
                                          "'var: value' lines under it")
            check_vars(body, f"host {raw_name!r}", self.warnings, at)
            layers = [body] if body else []
            host_name = str(raw_name)
            m = _HOST_PORT.fullmatch(host_name)
            if m:  # Ansible's "host:port" key; explicit port vars still win
                host_name = m.group(1)
                port = YamlMap({"ansible_port": int(m.group(2))}, file=at.file, line=at.line)
                port.key_lines["ansible_port"] = at.line or 0
                check_vars(port, f"host {raw_name!r}", self.warnings, at)
                layers.insert(0, port)
            for name in expand_host_range(host_name, at):
                if name not in self.hosts:
                    self.hosts[name] = Host(name, file=at.file, line=at.line)
                    self.host_vars[name] = []
                if name not in group.hosts:
                    group.hosts.append(name)
                self.host_vars[name].extend(layers)

    def check_cycles(self) -> None:
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        path: list[str] = []

        def visit(name: str) -> None:
            state[name] = 1
            path.append(name)
            for child in self.groups[name].children:
                if state.get(child) == 1:
                    cycle = [*path[path.index(child):], child]
                    raise InventoryError(
                        "group cycle: " + " -> ".join(cycle) + " (a group cannot contain "
                        "itself, directly or through children)", *self.edges[(name, child)])
                if child not in state:
                    visit(child)
            path.pop()
            state[name] = 2

        for name in list(self.groups):
            if name not in state:
                visit(name)

    def set_depths(self) -> None:
        def depth(name: str) -> int:
            group = self.groups[name]
            if name != "all" and not group.depth:
                group.depth = 1 + max((depth(p) for p in group.parents), default=0)
            return group.depth

        for name in self.groups:
            depth(name)

    def load_vars_dir(self, kind: str, known: Mapping[str, Any], target: Any) -> None:
        base = self.path.parent / kind
        if not base.is_dir():
            return
        found: dict[str, list[Path]] = {}
        for entry in sorted(base.iterdir()):
            if entry.name.startswith(".") or entry.name.endswith("~"):
                continue
            if entry.is_dir():
                files = sorted(p for p in entry.rglob("*") if p.is_file()
                               and p.suffix in _YAML_EXT and not p.name.startswith("."))
                found.setdefault(entry.name, []).extend(files)
            elif entry.suffix in _YAML_EXT or not entry.suffix:
                name = entry.stem if entry.suffix in _YAML_EXT else entry.name
                found.setdefault(name, []).insert(0, entry)  # files before a directory
        what = "group" if kind == "group_vars" else "host"
        for name, files in found.items():
            if name not in known:
                hint = did_you_mean(name, known)
                self.warnings.append(f"{files[0]}: no {what} named {name!r} in {self.file}; "
                                     f"file ignored" + (f" ({hint})" if hint else ""))
                continue
            for file in files:
                data = load_yaml(file)
                check_vars(data, f"{kind} file", self.warnings, Location(str(file), 1))
                if data:
                    target(name, data).append(data)

    def finish_host(self, host: Host) -> None:
        direct = [g for g in self.groups.values() if host.name in g.hosts]
        seen: set[str] = {"all"}
        todo = [g.name for g in direct]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.groups[name].parents)
        host.groups = sorted(seen, key=lambda n: (self.groups[n].depth, n))
        layers = [layer for g in host.groups for layer in self.groups[g].vars]
        layers += self.host_vars[host.name]
        for index, layer in enumerate(layers):
            for key, value in layer.items():
                host.vars[key] = value
                host.var_origins[key] = location(layer, key)
                host._layers[key] = index
        _resolve_connection(host)
