"""Fabric over gpuprov's inventory, with gpuprov's host key checking.

    from gpuprov.fabric import group

    hosts = group("inventory.yml", "lab")     # a fabric.ThreadingGroup
    for conn, result in hosts.run("nvidia-smi -L", hide=True).items():
        print(conn.inventory_name, result.stdout.strip())

Each host becomes a `fabric.Connection` the way gpuprov itself would reach
it: address, port, user and key file from the inventory, the rest (and
ProxyJump hops, each a gateway Connection) from ~/.ssh/config, the become
password (`sudo.password`) when given. Fabric accepts unknown host keys by
default (paramiko's AutoAddPolicy); here every hop's key is checked against
the known_hosts gpuprov uses for the host (its ssh_known_hosts_file, else
ssh_config's, else ~/.ssh/known_hosts), by gpuprov's rules (hashed names,
@revoked, @cert-authority), always strict: an unknown, changed or revoked
key raises HostKeyRefused before any login. No key is ever recorded.

This module sits beside the cli, at the top of the layers: it reads the
model (the inventory) and the connectors (routes, known_hosts).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fabric
import paramiko

from gpuprov.connectors.hostkeys import STRICT, KnownHosts
from gpuprov.connectors.ssh import SshConnector
from gpuprov.connectors.ssh_config import Hop
from gpuprov.engine.connect import ConnectOptions, connector_for
from gpuprov.errors import GpuprovError, UnreachableHost
from gpuprov.model.inventory import Host, load_inventory

__all__ = ["HostKeyRefused", "InventoryConnection", "StrictKnownHosts", "connection", "group"]


class HostKeyRefused(paramiko.SSHException):
    """The host's key is not the one known_hosts holds for it (unknown,
    changed, revoked): nothing was sent to it. The message says what to do."""


class StrictKnownHosts(paramiko.MissingHostKeyPolicy):
    """paramiko's host key policy for one hop, answered by gpuprov's KnownHosts.

    The Connection's paramiko client holds no host keys of its own, so
    paramiko asks this policy about every key it is shown."""

    def __init__(self, known_hosts: KnownHosts, host: str, name: str) -> None:
        self.known_hosts, self.host, self.name = known_hosts, host, name

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        try:
            # strict and nobody to ask: an unknown key is refused, never recorded
            self.known_hosts.check(self.host, self.name, key, policy=STRICT, confirm=None)
        except UnreachableHost as exc:
            raise HostKeyRefused(str(exc)) from None


class InventoryConnection(fabric.Connection):
    #: the host's name in the inventory (`host` is the address connected to)
    inventory_name: str | None = None


def connection(host: Host, *, become_password: str | None = None,
               ssh_config: Path | None = None, connect_timeout: float = 10.0
               ) -> InventoryConnection:
    """The Connection to `host` (not opened yet), through its ProxyJump hops."""
    connector = connector_for(host, ConnectOptions(
        host_key_checking=STRICT, become_password=become_password,
        connect_timeout=connect_timeout, ssh_config=ssh_config))
    if not isinstance(connector, SshConnector):
        raise GpuprovError(f"{host.name}: ansible_connection {host.connection}: Fabric "
                           "connects over SSH only")
    route = connector.route
    overrides: dict[str, Any] = {"sudo": {"password": become_password}} if become_password \
        else {}
    gateway: InventoryConnection | None = None
    for hop in route.hops:
        gateway = _hop(host.name, hop, route.known_hosts, gateway, overrides, connect_timeout)
    assert gateway is not None
    gateway.inventory_name = host.name
    return gateway


def group(inventory_path: str | Path, pattern: str | None = None, *,
          become_password: str | None = None, ssh_config: Path | None = None,
          connect_timeout: float = 10.0) -> fabric.ThreadingGroup:
    """A ThreadingGroup of the hosts `pattern` selects (`--limit`'s syntax;
    None: every host), in inventory order."""
    inventory, _ = load_inventory(str(inventory_path))
    hosts = inventory.select(pattern) if pattern else list(inventory.hosts.values())
    return fabric.ThreadingGroup.from_connections([
        connection(h, become_password=become_password, ssh_config=ssh_config,
                   connect_timeout=connect_timeout) for h in hosts])


def _hop(host: str, hop: Hop, known_hosts: KnownHosts, gateway: InventoryConnection | None,
         overrides: dict[str, Any], connect_timeout: float) -> InventoryConnection:
    kwargs: dict[str, Any] = {}
    files = [str(p) for p in [*hop.identity_files, *hop.fallback_files]]
    if files:
        kwargs["key_filename"] = files
    if hop.identities_only:
        kwargs["look_for_keys"] = False
    disabled = disabled_host_key_types(known_hosts.key_types(hop.known_name))
    if disabled:
        kwargs["disabled_algorithms"] = {"keys": disabled}
    conn = InventoryConnection(
        hop.address, user=hop.user, port=hop.port,
        # ssh_config was read already (the hops): Fabric must not read it again
        config=fabric.Config(ssh_config=paramiko.SSHConfig(), overrides=overrides),
        # False: no gateway at all (None would let Fabric look one up)
        gateway=gateway if gateway is not None else (hop.proxy_command or False),
        connect_timeout=max(1, round(connect_timeout)), connect_kwargs=kwargs)
    conn.client.set_missing_host_key_policy(StrictKnownHosts(known_hosts, host, hop.known_name))
    return conn


def disabled_host_key_types(known: Sequence[str]) -> list[str]:
    """The host key algorithms to leave out so the server shows a key of a
    type known_hosts has for it (as OpenSSH asks for those first): without
    this, a host whose ed25519 key is not recorded but whose RSA key is would
    look unknown. Nothing is left out when no type is known (refused anyway)."""
    if not known:
        return []
    wanted = {algo for key_type in known for algo in (
        ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if key_type == "ssh-rsa" else (key_type,))}
    every = [*paramiko.Transport._preferred_keys,  # type: ignore[attr-defined]
             *paramiko.Transport._key_info]  # type: ignore[attr-defined]
    return [algo for algo in dict.fromkeys(every) if algo not in wanted]
