"""`gpuprov jupyter-url HOST`: what a researcher types to reach JupyterLab on
a host, from the inventory and the jupyter role's defaults. Reads no host and
prints no secret: the token stays in its file on the host."""

from __future__ import annotations

from gpuprov import jupyter
from gpuprov.errors import GpuprovError
from gpuprov.model.inventory import Inventory
from gpuprov.model.paths import bundled_dir
from gpuprov.model.playbook import find_role, load_role_defaults, role_search_path
from gpuprov.model.vars import build_host_vars


def jupyter_access(inventory: Inventory, name: str, user: str | None = None) -> str:
    """The tunnel command, URL and how to log in for host `name`."""
    where = str(inventory.path) if inventory.path else "the inventory (none given: this machine)"
    host = inventory.hosts.get(name)
    if host is None:
        known = ", ".join(sorted(inventory.hosts)[:10]) or "none"
        raise GpuprovError(f"no host {name!r} in {where}", hint=f"hosts: {known}")
    role = find_role("jupyter", role_search_path(None, bundled_dir("roles")))
    vars = build_host_vars(host, role_defaults=load_role_defaults(role), role="jupyter")
    try:
        if not jupyter.enabled(vars):
            raise GpuprovError(f"{name}: Jupyter is disabled there (jupyter_enabled: false)")
        text = jupyter.access_text(vars, host.address, user or host.ssh_user, host.ssh_port)
    except jupyter.JupyterVarError as exc:
        raise GpuprovError(f"{name}: {exc}", exc.hint) from None
    return f"JupyterLab on {name}:\n{text}"
