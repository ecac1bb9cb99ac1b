"""The jupyter role's variables, read and checked once: where its files go on
the host and in the container, and Settings, everything the role needs.

Pure functions of a host's variables, shared by the role's tasks (what gets
rendered and run), `gpuprov jupyter-url` (access.py: what a researcher is
told) and the tests (the exact config a real jupyter_server is started with).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpuprov.facts.docker import gpus_arg, parse_image_ref
from gpuprov.facts.docker_limits import (
    DOCKER_MEMORY_MIN,
    ContainerLimits,
    format_size,
    parse_cpus,
    parse_size,
)

NAME = "gpuprov-jupyter"            # container, service and script
SCRIPT = f"/usr/local/sbin/{NAME}"
UNIT = f"/etc/systemd/system/{NAME}.service"
INIT_SCRIPT = f"/etc/init.d/{NAME}"
#: the group that may read the token and the config (jupyter_token_readers, and
#: the container through --group-add): not `users`, whose members are everyone
GROUP = NAME
CONFIG_DIR = "/etc/gpuprov/jupyter"
CONFIG = f"{CONFIG_DIR}/jupyter_server_config.json"
SSH_DIR = f"{CONFIG_DIR}/ssh"
AUTHORIZED_KEYS = f"{SSH_DIR}/authorized_keys"
SSH_DROPIN = f"{SSH_DIR}/00-gpuprov-container.conf"

# Inside the container
PORT = 8888
WORKSPACE = "/workspace"
DATA = f"{WORKSPACE}/data"
IN_CONFIG = "/etc/gpuprov/jupyter_server_config.json"
IN_TOKEN = "/etc/gpuprov/jupyter_token"
IN_CERT = "/etc/gpuprov/tls/cert.pem"
IN_KEY = "/etc/gpuprov/tls/key.pem"
IN_AUTHORIZED_KEYS = "/etc/ssh/gpuprov/authorized_keys"
IN_SSH_DROPIN = "/etc/ssh/sshd_config.d/00-gpuprov-container.conf"

#: how to make a jupyter_password_hash; inventory.example.yml says the same
HASH_COMMAND = "python3 -c 'from jupyter_server.auth import passwd; print(passwd())'"
#: what inventory.example.yml holds where a hash goes
PLACEHOLDER = "REPLACE_ME"
# What jupyter_server.auth.passwd() produces: argon2:$argon2id$v=19$m=..,t=..,p=..$salt$hash
_ARGON2 = re.compile(r"argon2:\$argon2(?:id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+"
                     r"\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}")
_PUBKEY = re.compile(r"(?:^|\s)(?:ssh-(?:ed25519|rsa)|ecdsa-sha2-nistp(?:256|384|521)|"
                     r"sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) AAAA[A-Za-z0-9+/]+=*"
                     r"(?:\s|$)")
_ID = re.compile(r"\d{1,10}")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "")


class JupyterVarError(ValueError):
    """A variable's value is refused; the role turns it into ctx.bad_var(name, ...)."""

    def __init__(self, name: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.hint = hint


# ---------------------------------------------------------------- reading variables

def _bool(vars: Mapping[str, Any], name: str, default: bool) -> bool:
    value = vars.get(name, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()   # -e name=false gives the string "false"
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise JupyterVarError(name, "must be true or false")


def port_var(vars: Mapping[str, Any], name: str, default: int) -> int:
    value = vars.get(name, default)
    try:
        port = int(str(value).strip())
    except ValueError:
        port = 0
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise JupyterVarError(name, "must be a TCP port number (1-65535)")
    return port


def _ip(vars: Mapping[str, Any], name: str, default: str) -> str:
    text = str(vars.get(name, default) or "").strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise JupyterVarError(name, "must be an IP address (docker publishes on an address, "
                              "not a name)", "e.g. 127.0.0.1") from None


def enabled(vars: Mapping[str, Any]) -> bool:
    return _bool(vars, "jupyter_enabled", True)


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def path_var(vars: Mapping[str, Any], name: str, default: str = "") -> str:
    text = str(vars.get(name, default) or "").strip()
    if text and (not text.startswith("/") or posixpath.normpath(text) == "/"
                 or any(c in text for c in ",:\n")):
        # , and : would break docker's -v/--mount syntax
        raise JupyterVarError(name, "must be an absolute path (without , or :)")
    return posixpath.normpath(text) if text else ""


def password_hash(vars: Mapping[str, Any]) -> str:
    """jupyter_password_hash, checked: "" or an argon2 hash from passwd()."""
    value = str(vars.get("jupyter_password_hash") or "").strip()
    if value and not _ARGON2.fullmatch(value):
        if PLACEHOLDER in value:
            problem = (f"is the example inventory's placeholder ({PLACEHOLDER}), not a hash; "
                       "put your hash there, or remove the variable to log in with a token")
        elif value.startswith("argon2:"):
            problem = ("starts with 'argon2:' but is not a whole argon2 hash as produced by "
                       "jupyter_server.auth.passwd() (argon2:$argon2id$v=..$m=..,t=..,p=.."
                       "$SALT$HASH)")
        else:
            problem = ("is not an argon2 hash as produced by jupyter_server.auth.passwd() "
                       "(it must start with 'argon2:')")
        raise JupyterVarError("jupyter_password_hash", problem, f"make one with: {HASH_COMMAND}")
    return value


def tls_paths(vars: Mapping[str, Any]) -> tuple[str, str] | None:
    """(cert, key) paths on the host, both or neither."""
    cert = path_var(vars, "jupyter_tls_cert")
    key = path_var(vars, "jupyter_tls_key")
    if bool(cert) != bool(key):
        missing = "jupyter_tls_key" if cert else "jupyter_tls_cert"
        raise JupyterVarError(missing, "must be set together with "
                              f"{'jupyter_tls_cert' if cert else 'jupyter_tls_key'}")
    return (cert, key) if cert else None


def bind_address(vars: Mapping[str, Any]) -> str:
    """jupyter_bind_address; anything but loopback only with TLS."""
    address = _ip(vars, "jupyter_bind_address", "127.0.0.1")
    if not is_loopback(address) and tls_paths(vars) is None:
        raise JupyterVarError(
            "jupyter_bind_address", "publishing Jupyter on a non-loopback address needs TLS",
            "set jupyter_tls_cert and jupyter_tls_key (paths on the host), or keep "
            "127.0.0.1 and use an SSH tunnel (gpuprov jupyter-url HOST)")
    return address


# ---------------------------------------------------------------- the container

@dataclass(frozen=True)
class Settings:
    """Everything the role needs, checked (JupyterVarError names the variable)."""

    enabled: bool
    port: int
    bind: str
    tls: tuple[str, str] | None
    password_hash: str
    token_file: str
    image: str
    command: tuple[str, ...]
    uid: str
    gid: str
    data_dir: str
    gpus: str
    ssh: bool
    ssh_port: int
    ssh_bind: str
    ssh_keys: tuple[str, ...]
    #: who may read the token without sudo: the members of GROUP
    token_readers: tuple[str, ...] = ()
    #: the host's hardened sshd drop-in, mounted into the container ("" without container_ssh)
    sshd_dropin: str = ""
    #: jupyter_memory, jupyter_cpus, jupyter_shm_size, jupyter_pids_limit
    limits: ContainerLimits = ContainerLimits()

    @property
    def token(self) -> bool:
        """Token auth (the token file), as opposed to the password hash."""
        return not self.password_hash

    @property
    def publish(self) -> tuple[str, ...]:
        """docker -p values: the host address:port -> the container port."""
        out = [f"{bracket(self.bind)}:{self.port}:{PORT}"]
        if self.ssh:
            out.append(f"{bracket(self.ssh_bind)}:{self.ssh_port}:22")
        return tuple(out)

    @property
    def addresses(self) -> tuple[str, ...]:
        """Where the host publishes it, for people: "127.0.0.1:8888"."""
        return tuple(p.rsplit(":", 1)[0] for p in self.publish)


def bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def image_ref(vars: Mapping[str, Any]) -> str:
    """jupyter_image, else gpu_image pinned by gpu_image_digest (repo@sha256:...)."""
    own = str(vars.get("jupyter_image") or "").strip()
    name = "jupyter_image" if own else "gpu_image"
    ref_text = own or str(vars.get("gpu_image") or "").strip()
    if not ref_text:
        raise JupyterVarError("jupyter_image", "is empty and gpu_image is not set",
                              "list the gpu_image role in the same play, or set jupyter_image")
    try:
        ref = parse_image_ref(ref_text)
    except ValueError as exc:
        raise JupyterVarError(name, str(exc)) from None
    digest = "" if own else str(vars.get("gpu_image_digest") or "").strip()
    if not digest:
        return str(ref)
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise JupyterVarError("gpu_image_digest", "is not sha256:<64 hex digits>")
    if ref.digest and ref.digest != digest:
        raise JupyterVarError("gpu_image_digest", f"differs from the digest in {ref_text}")
    return f"{ref.repo}@{digest}"   # exactly the image gpu_image checked, whatever the tag says


def _command(vars: Mapping[str, Any]) -> tuple[str, ...]:
    value = vars.get("jupyter_command", ["jupyter", "lab"])
    words = shlex.split(value) if isinstance(value, str) else value
    if not isinstance(words, Sequence) or not words or not all(
            isinstance(w, (str, int, float)) and not isinstance(w, bool) for w in words):
        raise JupyterVarError("jupyter_command", "must be a non-empty list of words, "
                              "e.g. [jupyter, lab]")
    return tuple(str(w) for w in words)


def _user(vars: Mapping[str, Any]) -> tuple[str, str]:
    text = str(vars.get("jupyter_user", "1000:100")).strip()
    uid, sep, gid = text.partition(":")
    if not (sep and _ID.fullmatch(uid) and _ID.fullmatch(gid)):
        raise JupyterVarError("jupyter_user", "must be numeric uid:gid like 1000:100 (names "
                              "differ between the host and the image)")
    if int(uid) == 0 or int(gid) == 0:
        raise JupyterVarError("jupyter_user", "must not be root (uid or gid 0)")
    return str(int(uid)), str(int(gid))


def _ssh_keys(vars: Mapping[str, Any]) -> tuple[str, ...]:
    value = vars.get("container_ssh_authorized_keys") or []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise JupyterVarError("container_ssh_authorized_keys",
                              "must be a list of public key lines")
    keys = tuple(str(k).strip() for k in value)
    for i, key in enumerate(keys):
        if "\n" in key or "PRIVATE KEY" in key or not _PUBKEY.search(key):
            raise JupyterVarError("container_ssh_authorized_keys",
                                  f"item {i + 1} is not one public key line "
                                  "(ssh-ed25519 AAAA... comment)")
    return keys


def token_readers(vars: Mapping[str, Any]) -> tuple[str, ...]:
    """jupyter_token_readers: user names (the group op checks they exist)."""
    value = vars.get("jupyter_token_readers") or []
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(u, str) and _USER.fullmatch(u.strip()) for u in value):
        raise JupyterVarError("jupyter_token_readers", "must be a list of user names",
                              "e.g. [alice, bob]")
    return tuple(u.strip() for u in value)


def settings(vars: Mapping[str, Any]) -> Settings:
    """The role's variables, checked. Raises JupyterVarError naming the first bad one."""
    on = enabled(vars)
    devices = str(vars.get("gpu_devices", "all"))
    try:
        gpus = gpus_arg(devices)
    except ValueError as exc:
        raise JupyterVarError("gpu_devices", str(exc)) from None
    token_file = path_var(vars, "jupyter_token_file", f"{CONFIG_DIR}/token")
    if not token_file:
        raise JupyterVarError("jupyter_token_file", "must be an absolute path")
    data_dir = path_var(vars, "data_dir", "/srv/gpuprov/data")
    if not data_dir:
        raise JupyterVarError("data_dir", "must be an absolute path")
    uid, gid = _user(vars)
    ssh = _bool(vars, "container_ssh", False)
    keys = _ssh_keys(vars)
    if ssh and not keys:
        raise JupyterVarError("container_ssh_authorized_keys", "is empty but container_ssh "
                              "is true: nobody could log in", "list the public keys allowed in")
    return Settings(
        enabled=on, port=port_var(vars, "jupyter_port", 8888), bind=bind_address(vars),
        tls=tls_paths(vars), password_hash=password_hash(vars), token_file=token_file,
        image=image_ref(vars), command=_command(vars), uid=uid, gid=gid, data_dir=data_dir,
        gpus=gpus, ssh=ssh, ssh_port=port_var(vars, "container_ssh_port", 2222),
        ssh_bind=_ip(vars, "container_ssh_bind_address", "127.0.0.1"), ssh_keys=keys,
        token_readers=token_readers(vars),
        sshd_dropin=host_sshd_dropin(vars) if ssh else "", limits=limits(vars))


def host_sshd_dropin(vars: Mapping[str, Any]) -> str:
    """sshd_dropin: the sshd_hardening role's variable (its defaults.yml owns the
    path), seen here when that role is listed in the same play, as in
    playbooks/site.yml, or set in the inventory."""
    dropin = path_var(vars, "sshd_dropin")
    if not dropin:
        raise JupyterVarError(
            "sshd_dropin", "is not set, and container_ssh mounts that hardened sshd drop-in "
            "of the host into the container",
            "list the sshd_hardening role in this play (with tags: [never] it is not run, "
            "only its defaults are read, as in playbooks/site.yml), or set sshd_dropin")
    return dropin


# ---------------------------------------------------------------- resource limits

def _unset(value: Any) -> bool:
    return value is None or str(value).strip() == ""


def _size(vars: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = vars.get(name)
    if _unset(value):
        return None
    try:
        size = parse_size(value)
    except ValueError:
        raise JupyterVarError(name, "must be a size as docker writes it: a number and "
                              "b, k, m, g or t (binary: 1g = 1024m)", "e.g. 16g") from None
    if size < minimum:
        raise JupyterVarError(name, f"must be at least {format_size(minimum)}")
    return size


def _cpus(vars: Mapping[str, Any]) -> int | None:
    value = vars.get("jupyter_cpus")
    if _unset(value):
        return None
    try:
        nano = parse_cpus(value)
    except ValueError as exc:
        raise JupyterVarError("jupyter_cpus", f"must be a number of CPUs: {exc}",
                              "e.g. 8 or 1.5") from None
    if nano < 10 ** 7:   # docker's own floor
        raise JupyterVarError("jupyter_cpus", "must be at least 0.01")
    return nano


def _pids(vars: Mapping[str, Any]) -> int | None:
    value = vars.get("jupyter_pids_limit")
    if _unset(value):
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise JupyterVarError("jupyter_pids_limit", "must be a whole number of processes "
                              "and threads, at least 1 (empty: no limit)", "e.g. 4096")
    return int(text)


def limits(vars: Mapping[str, Any]) -> ContainerLimits:
    """The container's limits; empty memory, cpus or pids: none (docker's
    default), empty shm-size: the daemon's default /dev/shm (64m), not compared."""
    return ContainerLimits(memory=_size(vars, "jupyter_memory", DOCKER_MEMORY_MIN) or 0,
                           nano_cpus=_cpus(vars) or 0,
                           shm_size=_size(vars, "jupyter_shm_size", 1),
                           pids_limit=_pids(vars) or 0)
