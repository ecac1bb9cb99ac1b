"""How a researcher reaches JupyterLab on a host (`gpuprov jupyter-url HOST`,
and the end of `gpuprov onboard`): the tunnel, the URL, how to log in. From
the inventory and the role's defaults only: reads no host and prints no
secret, the token stays in its file on the host."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from gpuprov.errors import GpuprovError
from gpuprov.model.inventory import Inventory
from gpuprov.model.paths import bundled_dir
from gpuprov.model.playbook import find_role, load_role_defaults, role_search_path
from gpuprov.model.vars import build_host_vars

from .settings import (
    CONFIG_DIR,
    GROUP,
    JupyterVarError,
    bind_address,
    bracket,
    enabled,
    is_loopback,
    password_hash,
    path_var,
    port_var,
    tls_paths,
    token_readers,
)


def jupyter_access(inventory: Inventory, name: str, user: str | None = None) -> str:
    """The tunnel command, URL and how to log in for host `name`."""
    where = str(inventory.path) if inventory.path else "the inventory (none given: this machine)"
    host = inventory.hosts.get(name)
    if host is None:
        known = ", ".join(sorted(inventory.hosts)[:10]) or "none"
        raise GpuprovError(f"no host {name!r} in {where}", hint=f"hosts: {known}")
    # the defaults of the jupyter role a run from here would use (./roles first)
    role = find_role("jupyter", role_search_path(None, bundled_dir("roles")))
    vars = build_host_vars(host, role_defaults=load_role_defaults(role), role="jupyter")
    try:
        if not enabled(vars):
            raise GpuprovError(f"{name}: Jupyter is disabled there (jupyter_enabled: false)")
        text = access_text(vars, host.address, user or host.ssh_user, host.ssh_port)
    except JupyterVarError as exc:
        where = host.var_origins.get(exc.name)
        at = f"{where}: " if where is not None and where.file else ""
        raise GpuprovError(f"{at}{name}: {exc}", exc.hint) from None
    return f"JupyterLab on {name}:\n{text}"


def access_text(vars: Mapping[str, Any], address: str, user: str | None,
                ssh_port: int | None) -> str:
    """How to reach Jupyter on a host: tunnel, URL, authentication. Never a
    token or hash: only where to read the token."""
    port = port_var(vars, "jupyter_port", 8888)
    bind = bind_address(vars)
    scheme = "https" if tls_paths(vars) else "http"
    target = f"{user}@{address}" if user else address
    steps: list[list[str]] = []
    if is_loopback(bind):
        ssh = ["ssh", "-L", f"{port}:localhost:{port}"]
        if ssh_port and ssh_port != 22:
            ssh += ["-p", str(ssh_port)]
        steps += [["Open a tunnel from your machine (leave it running):",
                   shlex.join([*ssh, target])],
                  ["Browse to:", f"{scheme}://localhost:{port}/lab"]]
    else:
        steps.append(["Browse to (published with TLS, no tunnel; the certificate must name "
                      "the host):", f"{scheme}://{bracket(address)}:{port}/lab"])
    if password_hash(vars):
        steps.append(["Log in with your Jupyter password."])
    else:
        steps.append(token_step(vars, target, user, ssh_port))
    lines = [f"{'   ' if j else f'{i}. '}{text}" for i, step in enumerate(steps, 1)
             for j, text in enumerate(step)]
    return "\n".join(lines) + "\n"


def token_step(vars: Mapping[str, Any], target: str, user: str | None,
               ssh_port: int | None) -> list[str]:
    """Where the token is and the command that prints it: root and the members
    of GROUP (jupyter_token_readers) may read it; `cat` for a member, else
    `sudo cat`."""
    token_file = path_var(vars, "jupyter_token_file", f"{CONFIG_DIR}/token")
    readers = token_readers(vars)
    member = user is not None and user in readers
    cat = ["cat", token_file] if member else ["sudo", "cat", token_file]
    # one word for ssh: the remote shell splits it again, so a path with a
    # space stays one path
    ssh = ["ssh", *([] if member else ["-t"]),
           *(["-p", str(ssh_port)] if ssh_port and ssh_port != 22 else []), target,
           shlex.join(cat)]
    if member:
        head = f"Log in with the token, readable by you as a member of the group {GROUP}:"
    else:
        head = (f"Log in with the token, readable on the host by root and the members of "
                f"{GROUP} (jupyter_token_readers: {', '.join(readers) or 'none'}):")
    return [head, shlex.join(cat), f"(from your machine: {shlex.join(ssh)})"]
