"""What the jupyter role launches: the jupyter_server config, the
`docker run` of the start script (and the spec hash that labels it), and the
files for SSH into the container. Pure functions of Settings / variables."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gpuprov.command import Command, Raw
from gpuprov.facts.docker_limits import format_cpus, format_size

from .settings import (
    AUTHORIZED_KEYS,
    CONFIG,
    DATA,
    GROUP,
    IN_AUTHORIZED_KEYS,
    IN_CERT,
    IN_CONFIG,
    IN_KEY,
    IN_SSH_DROPIN,
    IN_TOKEN,
    NAME,
    PORT,
    SSH_DROPIN,
    WORKSPACE,
    Settings,
    bind_address,
    is_loopback,
    password_hash,
    tls_paths,
)


def server_config(vars: Mapping[str, Any]) -> dict[str, Any]:
    """The jupyter_server config (JSON) the container is started with."""
    hashed = password_hash(vars)
    tls = tls_paths(vars)
    remote = not is_loopback(bind_address(vars))
    app: dict[str, Any] = {
        # 0.0.0.0 inside the container's own network namespace: docker forwards
        # published ports to the container's interface, never to its loopback.
        # What the host exposes is decided by `-p <jupyter_bind_address>:...`.
        "ip": "0.0.0.0",
        "port": PORT,
        "port_retries": 0,
        "open_browser": False,
        "allow_root": False,
        # Refuse requests whose Host header is not localhost/loopback (DNS
        # rebinding). Through `ssh -L` the browser says Host: localhost. Only the
        # explicit opt-in of a non-loopback address with TLS serves other names.
        "allow_remote_access": remote,
        "disable_check_xsrf": False,
        "allow_origin": "",
        "root_dir": WORKSPACE,
    }
    if tls:
        app["certfile"], app["keyfile"] = IN_CERT, IN_KEY
    provider: dict[str, Any] = {"allow_password_change": False}
    if hashed:
        # No token at all: not even a JUPYTER_TOKEN the image might set.
        provider.update(hashed_password=hashed, password_required=True, token="")
    return {"ServerApp": app, "PasswordIdentityProvider": provider}


def server_config_json(vars: Mapping[str, Any]) -> str:
    """server_config() exactly as written to the host."""
    return json.dumps(server_config(vars), indent=4, sort_keys=True) + "\n"


# ---------------------------------------------------------------- the container

#: the gid of GROUP, looked up by the start script when it runs: the group is
#: made by this role with whatever gid the host gives it, so no rendered file
#: can know it (docker resolves a group NAME in the image, not on the host)
GID_REF = "$JUPYTER_GID"


def run_options(s: Settings) -> list[tuple[str, ...]]:
    """`docker run` options, one option (and its value) per item, label excluded."""
    opts: list[tuple[str, ...]] = [
        ("-d",), ("--name", NAME), ("--restart", "on-failure:5"),
        # only the image gpu_image checked; never pull another one for that name
        ("--pull", "never"),
        ("--user", f"{s.uid}:{s.gid}"), ("--security-opt", "no-new-privileges"),
        # Jupyter runs as a uid other than 0: after exec it holds no capability,
        # and no-new-privileges stops a setuid binary from getting one back, so
        # the image needs none (sshd of container_ssh binds port 22 unprivileged:
        # docker sets net.ipv4.ip_unprivileged_port_start=0 in the container).
        ("--cap-drop", "ALL"),
        # the config (and the token) are root:GROUP 0640: the server reads them
        # through this supplementary group, not through jupyter_user's gid
        ("--group-add", GID_REF),
        ("--gpus", s.gpus),
        *limit_options(s),
        *(("-p", p) for p in s.publish),
        # The image has no passwd entry for the uid: HOME would be "/", where
        # Jupyter cannot write its runtime files. In the data volume, the
        # researcher's settings and `pip install --user` survive a restart.
        ("-e", f"HOME={DATA}"),
        ("-v", f"{s.data_dir}:{DATA}"),
        ("-v", f"{CONFIG}:{IN_CONFIG}:ro"),
    ]
    if s.tls:
        opts += [("-v", f"{s.tls[0]}:{IN_CERT}:ro"), ("-v", f"{s.tls[1]}:{IN_KEY}:ro")]
    if s.ssh:
        opts += [
            # --mount, not -v: a missing source is an error instead of an empty
            # directory docker would create at that path of the HOST's sshd config
            ("--mount", f"type=bind,source={s.sshd_dropin},target={s.sshd_dropin},readonly"),
            ("-v", f"{SSH_DROPIN}:{IN_SSH_DROPIN}:ro"),
            ("-v", f"{AUTHORIZED_KEYS}:{IN_AUTHORIZED_KEYS}:ro"),
        ]
    if s.token:
        # A file, mounted read-only: the token is in no environment (docker
        # inspect, /proc/PID/environ), no argv and no `ps`. jupyter_server
        # reads JUPYTER_TOKEN_FILE (IdentityProvider._token_default), but only
        # when JUPYTER_TOKEN is unset or empty: the empty value keeps one the
        # image may set from taking over.
        opts += [("-v", f"{s.token_file}:{IN_TOKEN}:ro"), ("-e", "JUPYTER_TOKEN="),
                 ("-e", f"JUPYTER_TOKEN_FILE={IN_TOKEN}")]
    return opts


def limit_options(s: Settings) -> list[tuple[str, str]]:
    """--memory, --cpus, --shm-size, --pids-limit of the declared limits, in the
    spelling docker inspect's numbers are compared in ("16G" and "16384m" are
    the same spec)."""
    lim = s.limits
    opts = []
    if lim.memory:
        opts.append(("--memory", format_size(lim.memory)))
    if lim.nano_cpus:
        opts.append(("--cpus", format_cpus(lim.nano_cpus)))
    if lim.shm_size:
        opts.append(("--shm-size", format_size(lim.shm_size)))
    if lim.pids_limit:
        opts.append(("--pids-limit", str(lim.pids_limit)))
    return opts


def run_args(s: Settings) -> tuple[str, ...]:
    """What follows the image: the command and the config to read."""
    return (*s.command, f"--config={IN_CONFIG}")


def spec_hash(s: Settings) -> str:
    """sha256 of how the container is started: its gpuprov.spec label."""
    spec = {"options": [list(o) for o in run_options(s)], "image": s.image,
            "args": list(run_args(s))}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def docker_run(s: Settings, sep: str = " ") -> str:
    """The `docker run` command line, quoted; `sep` joins its option groups
    (a backslash-newline spreads it over lines in a script)."""
    groups = [("docker", "run"), *run_options(s), ("--label", f"gpuprov.spec={spec_hash(s)}"),
              (s.image, *run_args(s))]
    # GID_REF stays a shell expansion, in double quotes: the one word not quoted as is
    return sep.join(Command(*(Raw(f'"{a}"') if a == GID_REF else a for a in g)).shell()
                    for g in groups)


def inspect_running_spec() -> str:
    """Shell: prints "<status> <spec label>" of the container (for the script)."""
    fmt = '{{.State.Status}} {{index .Config.Labels "gpuprov.spec"}}'
    return Command("docker", "inspect", "--type=container", "--format", fmt, NAME).shell()


def start_script_vars(s: Settings) -> dict[str, Any]:
    """What templates/gpuprov-jupyter.sh.j2 of the role is rendered with."""
    # every value the script uses as a word comes quoted (token_file is the
    # inventory's text: spaces or `;` in it must stay one path in a root script)
    return {"image": s.image, "publish": ", ".join(s.addresses), "token": s.token,
            "token_file": Command(s.token_file).shell(), "group": Command(GROUP).shell(),
            "spec": spec_hash(s), "inspect": inspect_running_spec(),
            "docker_run": docker_run(s, sep=" \\\n        ")}


def authorized_keys(s: Settings) -> str:
    return ("# Managed by gpuprov (role jupyter): container_ssh_authorized_keys\n"
            + "".join(k + "\n" for k in s.ssh_keys))


def ssh_dropin() -> str:
    return ("# Managed by gpuprov (role jupyter): the keys allowed into the container\n"
            f"AuthorizedKeysFile {IN_AUTHORIZED_KEYS}\n")
