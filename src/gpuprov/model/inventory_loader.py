"""The walk of one inventory file and the group_vars/ and host_vars/ beside it.

`read_inventory()` runs the steps in order: read the file, walk its groups
(hosts, vars and children of each, depth first), refuse group cycles, file
hosts of no group under `ungrouped`, set each group's depth below `all`,
add the *_vars files, then give each host its groups and merged vars.
Every error names the file and line of what it refuses (the entry in the
inventory, or the *_vars file); the precedence the merge follows is written
down in inventory.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from gpuprov.errors import InventoryError
from gpuprov.model.hosts import Group, Host, check_vars, resolve_connection
from gpuprov.model.yamlfile import Location, YamlMap, did_you_mean, kind_of, load_yaml, location

__all__ = ["LoadedInventory", "expand_host_range", "read_inventory"]

_GROUP_KEYS = ("hosts", "children", "vars")
_YAML_EXT = (".yml", ".yaml", ".json")
_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")
_NOWHERE = Location(None, None)
_HOST_PORT = re.compile(r"([^:\[\]]+):([0-9]+)")  # not IPv6, whose colons come in groups

VarLayers = list[Mapping[str, Any]]


class LoadedInventory(NamedTuple):
    hosts: dict[str, Host]    # in the order first written
    groups: dict[str, Group]
    warnings: list[str]


def read_inventory(path: Path) -> LoadedInventory:
    """Hosts and groups of the inventory at `path`, with the warnings to show."""
    loader = _Loader(path)
    loader.run()
    return LoadedInventory(loader.hosts, loader.groups, loader.warnings)


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


class _Loader:
    """One pass over the inventory file, then the *_vars files beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = str(path)
        self.groups: dict[str, Group] = {"all": Group("all")}
        self.hosts: dict[str, Host] = {}
        self.host_vars: dict[str, VarLayers] = {}
        self.edges: dict[tuple[str, str], Location] = {}
        self.warnings: list[str] = []

    def run(self) -> None:
        self.top_groups(self.read_file())
        self.check_cycles()
        self.file_ungrouped()
        self.set_depths()
        self.load_vars_dir("group_vars", self.groups, lambda name: self.groups[name].vars)
        self.load_vars_dir("host_vars", self.hosts, lambda name: self.host_vars[name])
        for host in self.hosts.values():
            self.check_host_name(host)
            self.finish_host(host)

    # -- the inventory file ------------------------------------------------------

    def read_file(self) -> Mapping[str, Any]:
        data = load_yaml(self.path)
        if data is None:
            self.warnings.append(f"{self.file}: the inventory is empty")
            data = {}
        if looks_like_playbook(data):
            # the path leads the message as it was typed: that is what -p takes
            raise InventoryError(f"{self.file} looks like a playbook, not an inventory: "
                                 f"did you mean -p {self.file}?")
        if not isinstance(data, Mapping):
            raise InventoryError(f"an inventory must be a mapping with 'all:' at the top, "
                                 f"got {kind_of(data)}", self.file, getattr(data, "line", 1))
        return data

    def top_groups(self, data: Mapping[str, Any]) -> None:
        """Top-level keys are groups; those other than `all` are children of all."""
        for name, body in data.items():
            if name in _GROUP_KEYS:
                raise InventoryError(f"'{name}:' at the top level must be inside a group",
                                     *location(data, name),
                                     hint=f"start the file with 'all:' and indent '{name}:' "
                                          "under it")
            self.group(name, body, None if name == "all" else "all", location(data, name))

    def group(self, name: Any, body: Any, parent: str | None, where: Location) -> None:
        group = self.declare_group(name, parent, where)
        if body is None:
            return
        self.check_group_body(name, body, where)
        if body.get("vars") is not None:
            check_vars(body["vars"], f"vars of group {name!r}", self.warnings,
                       location(body, "vars"))
            group.vars.append(body["vars"])
        self.group_hosts(group, body.get("hosts"), location(body, "hosts"))
        self.group_children(name, body.get("children"), location(body, "children"))

    def declare_group(self, name: Any, parent: str | None, where: Location) -> Group:
        """The group named `name` (created on first mention), linked under `parent`."""
        if not isinstance(name, str) or not name:
            raise InventoryError(f"group name must be a string, got {name!r}", *where)
        if name == "all" and parent is not None:
            raise InventoryError("'all' cannot be a child of another group", *where)
        group = self.groups.setdefault(name, Group(name, file=where.file, line=where.line))
        if group.file is None:
            group.file, group.line = where
        if parent is not None:
            # The first place that links the two is where a cycle is reported.
            self.edges.setdefault((parent, name), where)
            if name not in self.groups[parent].children:
                self.groups[parent].children.append(name)
            if parent not in group.parents:
                group.parents.append(parent)
        return group

    @staticmethod
    def check_group_body(name: str, body: Any, where: Location) -> None:
        if not isinstance(body, Mapping):
            raise InventoryError(f"group {name!r} must be a mapping with hosts:, children: "
                                 f"or vars:, got {kind_of(body)}", *where)
        for key in body:
            if key not in _GROUP_KEYS:
                raise _group_keys_error(key, name, body)

    def group_children(self, name: str, children: Any, where: Location) -> None:
        if children is None:
            return
        if not isinstance(children, Mapping):
            raise InventoryError(f"children of group {name!r} must be a mapping of group "
                                 f"names, got {kind_of(children)}", *where,
                                 hint="write each child group as 'lab:' on its own line, "
                                      "not '- lab'")
        for child, child_body in children.items():
            self.group(child, child_body, name, location(children, child))

    def group_hosts(self, group: Group, hosts: Any, where: Location) -> None:
        if hosts is None:
            return
        if not isinstance(hosts, Mapping):
            raise InventoryError(f"hosts of group {group.name!r} must be a mapping of host "
                                 f"names, got {kind_of(hosts)}", *where,
                                 hint="write each host as 'ws-01:' (a key), not '- ws-01'")
        for raw_name, body in hosts.items():
            at = location(hosts, raw_name)
            host_name, layers = self.host_entry(raw_name, body, at)
            for name in expand_host_range(host_name, at):
                if name not in self.hosts:
                    self.hosts[name] = Host(name, file=at.file, line=at.line)
                    self.host_vars[name] = []
                if name not in group.hosts:
                    group.hosts.append(name)
                self.host_vars[name].extend(layers)

    def host_entry(self, raw_name: Any, body: Any, at: Location) -> tuple[str, VarLayers]:
        """One `name:` under hosts: -> the host name (or range) and its inline vars."""
        if not isinstance(raw_name, (str, int)) or isinstance(raw_name, bool):
            raise InventoryError(f"host name must be a string, got {raw_name!r}", *at)
        if body is not None and not isinstance(body, Mapping):
            raise InventoryError(f"host {raw_name!r} must be followed by a mapping of "
                                 f"variables or nothing, got {kind_of(body)}", *at,
                                 hint=f"write '{raw_name}:' alone, or with indented "
                                      "'var: value' lines under it")
        check_vars(body, f"host {raw_name!r}", self.warnings, at)
        layers: VarLayers = [body] if body else []
        host_name = str(raw_name)
        m = _HOST_PORT.fullmatch(host_name)
        if m:  # Ansible's "host:port" key; explicit port vars still win
            host_name = m.group(1)
            port = YamlMap({"ansible_port": int(m.group(2))}, file=at.file, line=at.line)
            port.key_lines["ansible_port"] = at.line or 0
            check_vars(port, f"host {raw_name!r}", self.warnings, at)
            layers.insert(0, port)
        return host_name, layers

    # -- the group tree ----------------------------------------------------------

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

    def file_ungrouped(self) -> None:
        """Ansible's implicit group for hosts that are in no group but all."""
        ungrouped = self.groups.setdefault("ungrouped", Group("ungrouped", parents=["all"]))
        if "ungrouped" not in self.groups["all"].children:
            self.groups["all"].children.insert(0, "ungrouped")
        in_groups = {h for name, g in self.groups.items() if name != "all" for h in g.hosts}
        ungrouped.hosts.extend(h for h in self.hosts if h not in in_groups
                               and h not in ungrouped.hosts)

    def set_depths(self) -> None:
        def depth(name: str) -> int:
            group = self.groups[name]
            if name != "all" and not group.depth:
                group.depth = 1 + max((depth(p) for p in group.parents), default=0)
            return group.depth

        for name in self.groups:
            depth(name)

    # -- group_vars/ and host_vars/ ------------------------------------------------

    def load_vars_dir(self, kind: str, known: Mapping[str, Any],
                      layers_of: Callable[[str], VarLayers]) -> None:
        """Each file's vars go on top of the named group's (or host's) layers."""
        base = self.path.parent / kind
        if not base.is_dir():
            return
        what = "group" if kind == "group_vars" else "host"
        for name, files in _vars_files(base).items():
            if name not in known:
                hint = did_you_mean(name, known)
                self.warnings.append(f"{files[0]}: no {what} named {name!r} in {self.file}; "
                                     f"file ignored" + (f" ({hint})" if hint else ""))
                continue
            for file in files:
                data = load_yaml(file)
                check_vars(data, f"{kind} file", self.warnings, Location(str(file), 1))
                if data:
                    layers_of(name).append(data)

    # -- each host ---------------------------------------------------------------

    def check_host_name(self, host: Host) -> None:
        if host.name in self.groups:
            raise InventoryError(f"host {host.name!r} has the same name as a group", host.file,
                                 host.line, hint="patterns and --limit could not tell "
                                 "them apart; rename the host or the group")

    def finish_host(self, host: Host) -> None:
        host.groups = self.groups_of(host.name)
        layers = [layer for g in host.groups for layer in self.groups[g].vars]
        layers += self.host_vars[host.name]
        for index, layer in enumerate(layers):
            for key, value in layer.items():
                host.vars[key] = value
                host.var_origins[key] = location(layer, key)
                host._layers[key] = index
        resolve_connection(host)

    def groups_of(self, host: str) -> list[str]:
        """Every group the host is in, directly or through parents, low to high precedence."""
        seen: set[str] = {"all"}
        todo = [g.name for g in self.groups.values() if host in g.hosts]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.groups[name].parents)
        return sorted(seen, key=lambda n: (self.groups[n].depth, n))


def looks_like_playbook(data: Any) -> bool:
    """A list of plays, or one play (roles:, or hosts: naming a pattern where an
    inventory's hosts: would be a mapping): what a playbook given where the
    inventory goes (`gpuprov apply site.yml`) looks like."""
    if isinstance(data, list):
        return bool(data) and isinstance(data[0], Mapping) and bool(
            {"hosts", "roles", "tasks", "import_playbook"} & set(data[0]))
    return isinstance(data, Mapping) and ("roles" in data or isinstance(data.get("hosts"),
                                                                        str))


def _vars_files(base: Path) -> dict[str, list[Path]]:
    """name -> its files under group_vars/ or host_vars/: `name.yml` (or .yaml,
    .json, no extension) first, then the files of a directory `name/` in name order."""
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
    return found


def _group_keys_error(key: Any, group: str, data: Mapping[str, Any]) -> InventoryError:
    return InventoryError(
        f"unknown key {key!r} in group {group!r} (expected hosts, children or vars)",
        *location(data, key),
        hint=did_you_mean(str(key), _GROUP_KEYS)
        or "a group has only hosts:, children: and vars:; put variables under vars:")
