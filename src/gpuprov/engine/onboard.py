"""`gpuprov onboard HOST --group G`: a new machine with a password login (or
a cloud key for a default user) all the way to a verified GPU host that is
in the inventory and under drift-check.

Each step is idempotent, so a re-run after a failure continues:
1. first contact: the host key's fingerprint is shown and recorded (or
   checked against --host-key-fingerprint); a changed key stops everything;
2. access: if gpuprov cannot yet log in with its key and sudo, the
   onboard_access role runs over the password login (admin user, public key,
   sudoers), then a NEW key-only login + sudo must work before anything else;
3. the inventory file gets the host under the group (comments kept, backup);
4. the site playbook runs for the host (hardened sshd turns passwords off);
5. `verify` runs on it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from gpuprov.connectors.hostkeys import STRICT, fingerprint
from gpuprov.connectors.ssh import SshConnector
from gpuprov.engine.connect import ConnectOptions, connector_for
from gpuprov.engine.executor import Executor, ProgressSink, RunOptions
from gpuprov.engine.results import RunResult
from gpuprov.errors import GpuprovError, UnreachableHost
from gpuprov.model.inventory import Host, Inventory
from gpuprov.model.inventory_edit import diff, replace_with_backup, with_host
from gpuprov.model.playbook import load_named_plays

#: what onboarding runs over the first login, before the site playbook
ACCESS_PLAYBOOK = "onboard.yml"


class OnboardError(GpuprovError):
    """Onboarding stopped; what is done stays done, a re-run continues."""


@dataclass
class OnboardOptions:
    name: str
    group: str
    inventory: Path
    address: str | None = None
    #: who to log in as for the first contact (cloud images: ubuntu, ec2-user...)
    login_user: str | None = None
    #: the admin user to create; default: the inventory's user for the host
    user: str | None = None
    key_file: str | None = None
    # never in a repr: options end up in -v logs and tracebacks
    password: str | None = field(default=None, repr=False)
    become_password: str | None = field(default=None, repr=False)
    host_key_fingerprint: str | None = None
    #: asks a person (click.confirm); None: no terminal, nobody to ask
    confirm: Callable[[str], bool] | None = None
    sudo: str = "nopasswd"
    reboot: bool = False
    #: -T: seconds a host may take to connect, or stay silent (ConnectOptions')
    connect_timeout: float = 10.0
    extra_vars: dict[str, Any] = field(default_factory=dict, repr=False)  # -e can hold secrets
    progress: ProgressSink | None = None

    def connection_vars(self) -> dict[str, Any]:
        """Extra vars that pick the key (they win over the inventory, like -e)."""
        return {"ansible_ssh_private_key_file": self.key_file} if self.key_file else {}


@dataclass
class Staged:
    """The inventory with the new host, before it is written back."""

    path: Path
    before: str
    after: str
    inventory: Inventory
    #: the host as gpuprov will reach it (key from --key-file applied)
    host: Host

    @property
    def diff(self) -> str:
        return diff(str(self.path), self.before, self.after)


def stage(opts: OnboardOptions) -> Staged:
    """Load the inventory as it will be once the host is added (not written yet)."""
    path = opts.inventory
    try:
        before = path.read_text()
    except OSError as exc:
        raise OnboardError(f"cannot read the inventory {path}: {exc.strerror}",
                           hint="create it (see inventory.example.yml) or pass its path") from exc
    host_vars: dict[str, Any] = {}
    if opts.address and opts.address != opts.name:
        host_vars["ansible_host"] = opts.address
    after = with_host(before, str(path), opts.group, opts.name, host_vars)
    # Loaded from a temp copy beside it: group_vars/ and host_vars/ resolve the same.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.onboard-", suffix=".yml",
                               dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(after)
        inventory = Inventory.load(tmp)
    finally:
        os.unlink(tmp)
    host = inventory.hosts[opts.name].with_extra_vars(opts.connection_vars())
    return Staged(path, before, after, inventory, host)


# ---------------------------------------------------------------------------
# 1. first contact

def _ssh(host: Host, **options: Any) -> SshConnector:
    conn = connector_for(host, ConnectOptions(host_key_checking=STRICT, **options))
    if not isinstance(conn, SshConnector):
        raise OnboardError(f"{host.name}: onboarding works over SSH only (connection: local)")
    return conn


def first_contact(host: Host, opts: OnboardOptions) -> str:
    """Trust the host key once a person (or --host-key-fingerprint) confirmed
    it; returns a line saying what happened.

    An explicit --host-key-fingerprint is compared with the key the host
    offers even when known_hosts already has that key: the person asked for
    this host, and a known_hosts entry written by someone else (or for an
    old machine at the same address) must not silence the check.
    """
    conn = _ssh(host, connect_timeout=opts.connect_timeout)
    key = conn.host_key()
    shown = f"{key.get_name()} {fingerprint(key)}"
    name = conn.target.known_name
    known = conn.known_hosts.verify(host.name, name, key)   # raises when it CHANGED
    wanted = opts.host_key_fingerprint
    if wanted and _fp(wanted) != _fp(fingerprint(key)):
        raise OnboardError(
            f"{host.name} offered host key {shown}, not the expected {wanted}: refusing"
            + (" (that key is in known_hosts, but the fingerprint given wins)" if known
               else ""),
            hint="check the fingerprint with the host's console: "
                 "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
    if known:
        return f"host key {shown} already known" + (" and matches" if wanted else "")
    if not wanted:
        if opts.confirm is None:
            raise OnboardError(
                f"{host.name} is a new host offering {shown}, and there is no terminal to "
                "confirm it", hint="check it on the host's console (ssh-keygen -lf "
                "/etc/ssh/ssh_host_ed25519_key.pub), then pass --host-key-fingerprint")
        if not opts.confirm(f"{host.name} ({host.address}) offers host key {shown}. Trust it?"):
            raise OnboardError(f"{host.name}: host key not trusted; nothing was changed")
    conn.known_hosts.record(host.name, name, key)
    return f"host key {shown} recorded in {conn.known_hosts.user_file}"


def _fp(text: str) -> str:
    return text.strip().removeprefix("SHA256:").rstrip("=")


# ---------------------------------------------------------------------------
# 2. access

def key_login_problem(host: Host, become_password: str | None = None,
                      connect_timeout: float = 10.0) -> str | None:
    """None when a brand-new key-only login + sudo works; else why not."""
    conn = _ssh(host, become_password=become_password, connect_timeout=connect_timeout)
    try:
        conn.connect()
        res = conn.run("true", sudo=True)
        return None if res.ok else f"sudo failed (exit {res.exit_code}): {res.stderr.strip()}"
    except UnreachableHost as exc:
        return exc.detail
    finally:
        conn.close()


def public_keys(host: Host) -> list[str]:
    """The public half of the key gpuprov logs in with."""
    if not host.ssh_private_key_file:
        raise OnboardError(f"{host.name}: no key to install",
                           hint="pass --key-file, or set ansible_ssh_private_key_file")
    path = Path(host.ssh_private_key_file).expanduser()
    pub = path.with_name(path.name + ".pub")
    if pub.is_file():
        return [" ".join(pub.read_text().split()[:2])]
    try:
        key = paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException) as exc:
        raise OnboardError(f"cannot read the key {path}: {exc}") from exc
    return [f"{key.get_name()} {key.get_base64()}"]


def bootstrap(staged: Staged, opts: OnboardOptions) -> RunResult:
    """The access playbook (onboard.yml: the admin user, its key, sudo) over
    the first-contact login (password or cloud key); its variables are
    onboard_user, onboard_authorized_keys and onboard_sudo."""
    host = staged.host
    extra = {**opts.connection_vars(),
             "onboard_user": opts.user or host.ssh_user or "",
             "onboard_authorized_keys": public_keys(host), "onboard_sudo": opts.sudo}
    if opts.login_user:
        extra["ansible_user"] = opts.login_user
    options = RunOptions(
        extra_vars=extra,
        connect=ConnectOptions(host_key_checking=STRICT, ssh_password=opts.password,
                               become_password=opts.become_password or opts.password,
                               connect_timeout=opts.connect_timeout))
    return Executor(staged.inventory, load_named_plays(ACCESS_PLAYBOOK), [host], options,
                    opts.progress).run("apply")


# ---------------------------------------------------------------------------
# 3. the inventory (4 and 5 are the site and verify playbooks)

def commit_inventory(staged: Staged) -> Path | None:
    """Write the inventory with the host (backup first); None when it was there."""
    if staged.after == staged.before:
        return None
    if staged.path.read_text() != staged.before:
        raise OnboardError(f"{staged.path} changed while onboarding; not overwriting",
                           hint="rerun gpuprov onboard: it continues where it stopped")
    return replace_with_backup(staged.path, staged.after)
