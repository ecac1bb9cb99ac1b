"""A host and a group of the inventory, and the connection variables that say
how a host is reached.

Connection settings (address, ssh_user, ssh_port, ssh_private_key_file,
become, connection) come from a host's merged vars; gpuprov's own names and
Ansible's aliases are equivalent and the one set at the higher-precedence
layer wins. Ansible connection variables gpuprov does not use are accepted,
with a warning where ignoring them changes what happens on the host.

The inventory loader (inventory_loader.py) builds these; inventory.py
re-exports Host, Group and CONNECTION_VARS as the inventory's public API.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gpuprov.errors import InventoryError
from gpuprov.model.vars import HostVars, check_var_name, magic_vars
from gpuprov.model.yamlfile import Location, close_names, did_you_mean, kind_of, location

__all__ = ["CONNECTION_VARS", "Group", "Host", "check_vars", "resolve_connection"]

# gpuprov name -> Ansible aliases (the older ansible_ssh_* spellings too).
CONNECTION_VARS: dict[str, tuple[str, ...]] = {
    "address": ("ansible_host", "ansible_ssh_host"),
    "ssh_user": ("ansible_user", "ansible_ssh_user"),
    "ssh_port": ("ansible_port", "ansible_ssh_port"),
    "ssh_private_key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "become": ("ansible_become",),
    "connection": ("ansible_connection",),
    "ssh_host_key_checking": (),
}
#: values of ssh_host_key_checking (connectors/hostkeys.py STRICT, ACCEPT_NEW)
HOST_KEY_CHECKING = ("strict", "accept-new")

# Valid Ansible connection vars gpuprov does not use. The function returns a
# warning only when ignoring the value changes what happens on the host.
_IGNORED_ANSIBLE_VARS: dict[str, Any] = {
    "ansible_python_interpreter": lambda v: None,  # no Python needed on targets
    "ansible_shell_executable": lambda v: None,
    "ansible_ssh_pipelining": lambda v: None,
    "ansible_pipelining": lambda v: None,
    "ansible_timeout": lambda v: None,
    "ansible_host_key_checking": lambda v: None if v is not False else
        "is ignored: host keys are always verified (strict by default; "
        "ssh_host_key_checking: accept-new records unknown ones)",
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
_CONNECTIONS = {"ssh": "ssh", "smart": "ssh", "paramiko": "ssh", "local": "local"}


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
    ssh_host_key_checking: str | None = None  # strict | accept-new; None: ssh_config/strict
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
        resolve_connection(host)
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


def check_vars(data: Any, what: str, warnings: list[str], where: Location) -> None:
    """Validate one vars mapping as written (inline or in a *_vars file).

    Typos of connection variables are errors: a misspelt ansible_host would
    otherwise send gpuprov to the wrong machine (the host's name) silently.
    """
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise InventoryError(f"{what} must be a mapping of variable names to values, "
                             f"got {kind_of(data)}", *where)
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
        elif key == "ssh_host_key_checking":
            _host_key_checking(value, key, where)
        elif (key in ("connection", "ansible_connection") and not _is_template(value)
              and (not isinstance(value, str) or value not in _CONNECTIONS)):
            warnings.append(f"{where}: {key}={value!r} is not supported; gpuprov uses ssh")


@functools.lru_cache(maxsize=8192)
def _typo_of(key: str) -> tuple[str, ...]:
    # Cached: a fleet repeats the same few var names on every host.
    return tuple(close_names(key, _KNOWN_VARS, fuzzy=False))


def resolve_connection(host: Host) -> None:
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
        elif own == "ssh_host_key_checking":
            host.ssh_host_key_checking = _host_key_checking(value, name, where)
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


def _host_key_checking(value: Any, name: str, where: Location) -> str | None:
    if _is_template(value) or value is None:
        return None
    if value not in HOST_KEY_CHECKING:
        # `no`/`off` are deliberately not offered: an unverified first contact
        # is what accept-new already allows, and a changed key is never taken.
        raise InventoryError(f"{name} must be strict or accept-new, got {value!r}", *where,
                             hint="strict (the default) refuses unknown host keys; "
                                  "accept-new records them, like OpenSSH's accept-new")
    return str(value)


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value
