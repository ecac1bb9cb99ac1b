"""Which connector a host gets, from its inventory settings and run options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gpuprov.connectors.base import Become, Connector
from gpuprov.connectors.hostkeys import Confirm
from gpuprov.connectors.local import LocalConnector
from gpuprov.connectors.ssh import SshConnector, SshSettings
from gpuprov.model.inventory import Host


@dataclass(frozen=True)
class ConnectOptions:
    #: "strict" or "accept-new" for every host (--accept-new-host-keys, onboarding);
    #: None: each host's ssh_host_key_checking, else ssh_config, else strict
    host_key_checking: str | None = None
    #: asks a person about an unknown host key; None without a terminal
    confirm_host_key: Confirm | None = field(default=None, repr=False, compare=False)
    # never in a repr: options end up in -v logs and tracebacks
    become_password: str | None = field(default=None, repr=False)
    #: login password, tried after the keys (gpuprov onboard's first contact)
    ssh_password: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    ssh_config: Path | None = None


def connector_for(host: Host, options: ConnectOptions) -> Connector:
    # Roles manage root-owned state, so become defaults to on (sudo is only
    # used when the login user is not root anyway).
    become = Become(enabled=host.become is not False, password=options.become_password)
    if host.connection == "local":
        return LocalConnector(host.name, become)
    known_hosts = host.vars.get("ssh_known_hosts_file")
    return SshConnector(SshSettings(
        host.name, address=host.address, port=host.ssh_port, user=host.ssh_user,
        key_file=host.ssh_private_key_file,
        known_hosts=Path(str(known_hosts)).expanduser() if known_hosts else None,
        host_key_checking=options.host_key_checking or host.ssh_host_key_checking,
        confirm_host_key=options.confirm_host_key, become=become,
        connect_timeout=options.connect_timeout, ssh_config=options.ssh_config,
        password=options.ssh_password))
