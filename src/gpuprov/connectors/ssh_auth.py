"""Who is who on an SSH hop: the server's host key, then our keys or password.

The host key is checked against known_hosts before any key is offered, so an
impostor never sees which keys we hold. Keys are offered in the order OpenSSH
users expect (configured files, through ssh-agent when it holds them; other
agent keys; the default files), and a failed login lists every key tried.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from pathlib import Path

import paramiko

from gpuprov.connectors.hostkeys import Confirm, KnownHosts, fingerprint
from gpuprov.connectors.ssh_config import Hop, SetupError
from gpuprov.errors import UnreachableHost

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def prefer_key_types(transport: paramiko.Transport, known: list[str]) -> None:
    """Ask for the host key types in `known` first (call before the key exchange)."""
    # Like OpenSSH: ask for the key types known_hosts already has (host
    # certificates first when a CA is trusted), so a host with several keys
    # is verified instead of looking "unknown".
    options = transport.get_security_options()
    # paramiko lists certificate types only in Transport.preferred_keys, after
    # every plain type; its _key_info knows them all.
    usable = [*options.key_types, *transport._key_info]  # type: ignore[attr-defined]
    preferred: list[str] = []
    for key_type in known:
        for algo in (("rsa-sha2-512", "rsa-sha2-256") if key_type == "ssh-rsa" else (key_type,)):
            if algo in usable and algo not in preferred:
                preferred.append(algo)
    if preferred:
        options.key_types = [*preferred, *(k for k in options.key_types if k not in preferred)]


def check_host_key(transport: paramiko.Transport, known_hosts: KnownHosts, host_name: str,
                   hop: Hop, policy: str, confirm: Confirm | None = None) -> None:
    """Verify the key `hop` showed (recording an unknown one only under
    accept-new or when `confirm` says yes); SetupError if refused.

    Runs right after the key exchange, before any login: no key, password
    or sudo password is sent to a host whose key was not verified.
    """
    key = transport.get_remote_server_key()
    try:
        known_hosts.check(host_name, hop.known_name, key, policy, confirm)
    except UnreachableHost as exc:
        # Never retried: a changed or unknown key does not fix itself.
        raise SetupError(exc.kind, exc.detail, exc.hint) from exc


class Agent:
    """The ssh-agent connection, opened on first use and kept for the next hops."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._agent: paramiko.Agent | None = None

    def keys(self) -> list[paramiko.PKey]:
        if not self.enabled:
            return []
        try:
            if self._agent is None:
                self._agent = paramiko.Agent()
            return list(self._agent.get_keys())
        except (paramiko.SSHException, OSError):
            return []  # a broken agent should not hide the key files

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None


def keys_for(hop: Hop, agent: Agent) -> Iterator[tuple[str, paramiko.PKey | None]]:
    """Keys in the order OpenSSH users expect, each labelled for the error message.

    Configured key files first (through the agent when it holds them, so
    passphrase-protected files work), then other agent keys, then defaults.
    A key that cannot be used comes as (label, None), to be listed as tried.
    """
    agent_keys = agent.keys()
    in_agent = {k.asbytes(): k for k in agent_keys}
    used: set[bytes] = set()
    configured = bool(hop.identity_files)
    home_ssh = Path.home() / ".ssh"
    files = hop.identity_files or [home_ssh / name for name in DEFAULT_KEYS]
    for path in [*files, *hop.fallback_files]:
        if not configured and not path.exists():
            continue
        agent_key = in_agent.get(_public_blob(path) or b"")
        if agent_key is not None:
            used.add(agent_key.asbytes())
            yield f"{path} via ssh-agent ({fingerprint(agent_key)})", agent_key
            continue
        key, problem = _load_key(path)
        if key is None or key.asbytes() in used:
            if problem:
                yield f"{path} ({problem})", None
            continue
        used.add(key.asbytes())
        yield f"{path} ({fingerprint(key)})", key
    if hop.identities_only:
        return
    for key in agent_keys:
        if key.asbytes() not in used:
            used.add(key.asbytes())
            comment = getattr(key, "comment", "") or "no comment"
            yield f"ssh-agent key {comment} ({fingerprint(key)})", key


def authenticate(hop: Hop, transport: paramiko.Transport,
                 keys: Iterable[tuple[str, paramiko.PKey | None]],
                 password: str | None = None) -> paramiko.PKey | None:
    """Log in as hop.user: each key in turn, then `password` if one is given.

    Returns the key the server accepted, or None when the password did;
    raises SetupError (kind "auth") naming every key tried.
    """
    tried: list[str] = []
    note = ""
    for label, key in keys:
        if key is None:
            tried.append(label)
            continue
        try:
            remaining = transport.auth_publickey(hop.user, key)
        except paramiko.BadAuthenticationType as exc:
            raise SetupError("auth", f"{hop.label} does not accept public keys (it allows: "
                             f"{', '.join(exc.allowed_types) or 'nothing'})",
                             "gpuprov logs in with SSH keys only; enable PubkeyAuthentication"
                             ) from exc
        except paramiko.AuthenticationException:
            tried.append(label)
            continue
        except (paramiko.SSHException, EOFError, OSError):
            tried.append(label)
            note = (f"; the server closed the connection after {len(tried)} key(s) "
                    "(MaxAuthTries?)")
            break
        if transport.is_authenticated():
            return key
        tried.append(f"{label} (accepted, but the server also wants: {', '.join(remaining)})")
    if password is not None and not note:
        _password_login(hop, transport, password, tried)
        return None
    keys_tried = "; ".join(tried) if tried else ("none: no key file given, no ssh-agent keys, "
                                                 "and no ~/.ssh/id_ed25519, id_ecdsa or id_rsa")
    port = f"-p {hop.port} " if hop.port != 22 else ""
    raise SetupError("auth", f"{hop.label} rejected every key for user {hop.user!r}{note}. "
                     f"Keys tried: {keys_tried}",
                     f"check the user (ansible_user / User in ~/.ssh/config), install your "
                     f"public key with: ssh-copy-id {port}{hop.user}@{hop.address}, or pick "
                     "the key with --key-file / ansible_ssh_private_key_file")


def _password_login(hop: Hop, transport: paramiko.Transport, password: str,
                    tried: list[str]) -> None:
    try:
        transport.auth_password(hop.user, password)
    except paramiko.BadAuthenticationType as exc:
        raise SetupError("auth", f"{hop.label} does not accept passwords (it allows: "
                         f"{', '.join(exc.allowed_types) or 'nothing'})",
                         "log in with a key (--key-file) or the image's default user"
                         ) from exc
    except paramiko.AuthenticationException as exc:
        raise SetupError("auth", f"{hop.label} rejected the password for user "
                         f"{hop.user!r} (keys tried first: {'; '.join(tried) or 'none'})",
                         "check the user and the password") from exc
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SetupError("auth", f"{hop.label} closed the connection during the password "
                         f"login: {exc or type(exc).__name__}") from exc


def _load_key(path: Path) -> tuple[paramiko.PKey | None, str | None]:
    try:
        return paramiko.PKey.from_path(path), None
    except FileNotFoundError:
        return None, "not found"
    except (paramiko.PasswordRequiredException, TypeError):
        # cryptography raises TypeError for an encrypted OpenSSH-format key
        return None, "passphrase-protected, skipped: load it with ssh-add"
    except (paramiko.SSHException, ValueError, OSError) as exc:
        return None, f"unusable: {exc}"


def _public_blob(path: Path) -> bytes | None:
    """The key blob from `<key>.pub`, to find the key in the agent without its passphrase."""
    try:
        fields = Path(f"{path}.pub").read_text().split()
        return base64.b64decode(fields[1]) if len(fields) >= 2 else None
    except (OSError, binascii.Error):
        return None
