"""Where an SSH connection goes: ~/.ssh/config, ProxyJump chains and known_hosts files.

Resolution follows OpenSSH where users expect it: explicit arguments win over
ssh_config, `ProxyJump a,b` is a chain of hops each resolved with its own
config entry, and UserKnownHostsFile / StrictHostKeyChecking / HashKnownHosts
are honoured. Nothing here touches the network.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from gpuprov.connectors.hostkeys import ACCEPT_NEW, POLICIES, STRICT, KnownHosts, host_id
from gpuprov.errors import GpuprovError

_MAX_HOPS = 8


@dataclass
class Hop:
    """One SSH server on the way to the host, resolved through ssh_config."""

    alias: str
    address: str
    port: int
    user: str
    identity_files: list[Path]     # explicit or IdentityFile; empty -> defaults
    identities_only: bool = False
    key_alias: str | None = None   # HostKeyAlias
    proxy_jump: str | None = None
    proxy_command: str | None = None
    fallback_files: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.address}{port}"

    @property
    def known_name(self) -> str:
        return self.key_alias or host_id(self.address, self.port)


class SetupError(Exception):
    """A classified connection-setup failure; `retry` says if backoff may help.

    Raised by every setup step (TCP, handshake, host key, login) and turned
    into UnreachableHost once the connector has given up retrying.
    """

    def __init__(self, kind: str, detail: str, hint: str | None = None,
                 retry: bool = False) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.hint, self.retry = kind, detail, hint, retry


def load_config(path: Path | None) -> paramiko.SSHConfig:
    """`path`, or ~/.ssh/config; an empty config when the file does not exist."""
    path = path or Path.home() / ".ssh" / "config"
    try:
        return paramiko.SSHConfig.from_path(str(path)) if path.exists() else paramiko.SSHConfig()
    except (paramiko.ssh_exception.ConfigParseError, OSError, ValueError) as exc:
        raise GpuprovError(f"{path}: cannot read ssh config: {exc}") from exc


def resolve_chain(config: paramiko.SSHConfig, host_name: str, alias: str, user: str | None,
                  port: int | None, key_file: Path | None) -> list[Hop]:
    """[jump hosts..., target] for `alias`; explicit user/port/key_file win over config.

    `host_name` (the inventory name) only labels the error for a ProxyJump loop.
    """
    return _chain(config, host_name, alias, user, port, key_file, key_file, 0)


def _chain(config: paramiko.SSHConfig, host_name: str, alias: str, user: str | None,
           port: int | None, key_file: Path | None, host_key_file: Path | None,
           depth: int) -> list[Hop]:
    """`ProxyJump a,b` means: reach a (with a's own ssh_config, ProxyJump
    included), from a reach b, from b the target."""
    if depth > _MAX_HOPS:
        raise GpuprovError(f"{host_name}: ProxyJump chain longer than {_MAX_HOPS} hops "
                           "(a loop in ~/.ssh/config?)")
    hop = _resolve(config, alias, user, port, key_file)
    if not hop.proxy_jump or hop.proxy_jump == "none":
        return [hop]
    specs = [_parse_jump(spec) for spec in hop.proxy_jump.split(",")]
    (first_host, first_user, first_port), rest = specs[0], specs[1:]
    chain = _chain(config, host_name, first_host, first_user, first_port, None, host_key_file,
                   depth + 1)
    for jump_host, jump_user, jump_port in rest:
        chain.append(_resolve(config, jump_host, jump_user, jump_port, None))
    hop.proxy_command = None  # ProxyJump wins: a hop has one way in
    for jump in chain:
        # The host's own key is a sensible last try on its jump hosts.
        if host_key_file and host_key_file not in jump.identity_files:
            jump.fallback_files = [host_key_file]
    return [*chain, hop]


def _resolve(config: paramiko.SSHConfig, alias: str, user: str | None, port: int | None,
             key_file: Path | None) -> Hop:
    options = config.lookup(alias)
    files = [key_file] if key_file else [Path(p).expanduser()
                                         for p in options.get("identityfile", [])]
    proxy_command = options.get("proxycommand")
    return Hop(
        alias=alias,
        address=options.get("hostname", alias),
        port=port or int(options.get("port", 22)),
        user=user or options.get("user") or getpass.getuser(),
        identity_files=files,
        identities_only=options.get("identitiesonly", "no") == "yes",
        key_alias=options.get("hostkeyalias"),
        proxy_jump=options.get("proxyjump"),
        proxy_command=None if proxy_command in (None, "none") else proxy_command,
    )


def _parse_jump(spec: str) -> tuple[str, str | None, int | None]:
    """`[user@]host[:port]` or `ssh://[user@]host[:port]` -> (host, user, port)."""
    spec = spec.strip().removeprefix("ssh://")
    user, _, hostport = spec.rpartition("@")
    if hostport.startswith("["):  # [v6addr]:port
        host, _, rest = hostport[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    return host, user or None, int(port) if port else None


def known_hosts_for(explicit: Path | None, options: paramiko.SSHConfigDict) -> KnownHosts:
    """`explicit` replaces the user's and the system's known_hosts files."""
    hash_new = options.get("hashknownhosts") == "yes"
    if explicit is not None:
        return KnownHosts(Path(explicit), hash_new=hash_new)
    user_files = options.get("userknownhostsfile", "").split()
    user_file = Path(user_files[0]).expanduser() if user_files else (
        Path.home() / ".ssh" / "known_hosts")
    extra = tuple(Path(p).expanduser() for p in user_files[1:])
    return KnownHosts(user_file, (*extra, Path("/etc/ssh/ssh_known_hosts")), hash_new=hash_new)


# StrictHostKeyChecking -> gpuprov's policy. `no`/`off` is read as accept-new
# at most: a CHANGED key is never accepted, whatever ssh_config says.
_SSH_CONFIG_POLICY = {"yes": STRICT, "ask": STRICT, "accept-new": ACCEPT_NEW,
                      "no": ACCEPT_NEW, "off": ACCEPT_NEW}


def host_key_policy(explicit: str | None, options: paramiko.SSHConfigDict) -> str:
    """strict or accept-new: `explicit` (inventory var or CLI flag) wins over
    StrictHostKeyChecking in ssh_config; strict when neither says."""
    if explicit is not None:
        if explicit not in POLICIES:
            raise GpuprovError(f"host key checking {explicit!r} is not one of "
                               f"{', '.join(POLICIES)}")
        return explicit
    value = str(options.get("stricthostkeychecking", "yes")).lower()
    return _SSH_CONFIG_POLICY.get(value, STRICT)
