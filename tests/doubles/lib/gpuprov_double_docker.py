# TEST DOUBLE for gpuprov's test fleet: docker CLI, dockerd and containerd entry points.
# Never install on real hosts.
"""`docker` dispatch plus info/version, `dockerd --validate` and `containerd`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from gpuprov_double import append_line, read_text
from gpuprov_double_docker_format import TemplateError, render
from gpuprov_double_docker_images import (
    cmd_image_inspect,
    cmd_images,
    cmd_load,
    cmd_pull,
    cmd_rmi,
    format_option,
)
from gpuprov_double_docker_limits import cmd_update
from gpuprov_double_docker_run import cmd_inspect, cmd_ps, cmd_run, cmd_stop_rm, is_running
from gpuprov_double_docker_state import (
    API_VERSION,
    CALLS_LOG,
    DOCKER_COMMIT,
    DOCKER_VERSION,
    NO_DAEMON,
    daemon_running,
    default_runtime,
    load_containers,
    load_images,
    runtimes,
)
from gpuprov_double_docker_stats import cmd_stats

# Top-level daemon.json keys dockerd 28 accepts (dockerd --validate rejects others).
DAEMON_KEYS = frozenset([
    "allow-nondistributable-artifacts", "api-cors-header", "authorization-plugins", "bip",
    "bip6", "bridge", "builder", "cdi-spec-dirs", "cgroup-parent", "containerd",
    "containerd-namespace", "containerd-plugins-namespace", "data-root", "debug",
    "default-address-pools", "default-cgroupns-mode", "default-gateway", "default-gateway-v6",
    "default-ipc-mode", "default-network-opts", "default-runtime", "default-shm-size",
    "default-ulimits", "dns", "dns-opts", "dns-search", "exec-opts", "exec-root",
    "experimental", "features", "fixed-cidr", "fixed-cidr-v6", "group", "hosts", "http-proxy",
    "https-proxy", "icc", "init", "init-path", "insecure-registries", "ip", "ip-forward",
    "ip-forward-no-drop", "ip-masq", "ip6tables", "iptables", "ipv6", "labels", "live-restore",
    "log-driver", "log-format", "log-level", "log-opts", "max-concurrent-downloads",
    "max-concurrent-uploads", "max-download-attempts", "mtu", "no-new-privileges", "no-proxy",
    "node-generic-resources", "oom-score-adjust", "pidfile", "raw-logs", "registry-mirrors",
    "rootless", "runtimes", "seccomp-profile", "selinux-enabled", "shutdown-timeout",
    "storage-driver", "storage-opts", "swarm-default-advertise-addr", "tls", "tlscacert",
    "tlscert", "tlskey", "tlsverify", "userland-proxy", "userland-proxy-path", "userns-remap",
])


def validate_config(path: str, text: str | None) -> str | None:
    """The error dockerd prints for a bad daemon.json, or None when it is fine."""
    prefix = f"unable to configure the Docker daemon with file {path}: "
    if text is None:
        return f"{prefix}open {path}: no such file or directory"
    try:
        config = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        # Go's encoding/json wording, which is what real dockerd prints.
        if err.pos >= len(text.rstrip()):
            return f"{prefix}unexpected end of JSON input"
        return f"{prefix}invalid character {text[err.pos]!r} looking for beginning of value"
    if not isinstance(config, dict):
        return f"{prefix}json: cannot unmarshal {type(config).__name__} into Go value"
    unknown = sorted(k for k in config if k not in DAEMON_KEYS)
    if unknown:
        return f"{prefix}the following directives don't match any configuration option: " + \
            ", ".join(unknown)
    for name, spec in (config.get("runtimes") or {}).items():
        if not isinstance(spec, dict) or not spec.get("path"):
            return f"{prefix}runtime {name}: either a runtimeType or a path must be configured"
    return None


def dockerd_main(argv: list[str]) -> int:
    if "--version" in argv or "-v" in argv:
        sys.stdout.write(f"Docker version {DOCKER_VERSION}, build {DOCKER_COMMIT}\n")
        return 0
    path = "/etc/docker/daemon.json"
    for i, arg in enumerate(argv):
        if arg == "--config-file" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config-file="):
            path = arg.split("=", 1)[1]
    if "--validate" not in argv:
        sys.stderr.write("dockerd (test double): start it with /etc/init.d/docker\n")
        return 1
    if path.startswith("/"):
        text = read_text(path)
    else:
        text = Path(path).read_text() if os.path.exists(path) else None
    error = validate_config(path, text)
    if error:
        sys.stderr.write(error + "\n")
        return 1
    sys.stdout.write("configuration OK\n")
    return 0


def info_object() -> dict:
    containers = list(load_containers().values())
    running = sum(1 for c in containers if is_running(c))
    return {
        "ID": "GPUP:ROVT:ESTD:OUBL:E000:0000:0000:0000:0000:0000:0000:0000",
        "Containers": len(containers), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": len(containers) - running, "Images": len(load_images()),
        "Driver": "overlay2", "DockerRootDir": "/var/lib/docker", "ServerVersion": DOCKER_VERSION,
        "Runtimes": runtimes(), "DefaultRuntime": default_runtime(), "OSType": "linux",
        "OperatingSystem": "Debian GNU/Linux 12 (bookworm)", "Architecture": "x86_64",
        "KernelVersion": os.uname().release, "NCPU": os.cpu_count() or 1,
        "Name": os.uname().nodename, "CgroupDriver": "cgroupfs", "CgroupVersion": "2",
    }


def cmd_info(args: list[str]) -> int:
    fmt, _ = format_option(args)
    info = info_object()
    if fmt:
        try:
            sys.stdout.write(render(fmt, info) + "\n")
        except TemplateError as err:
            sys.stderr.write(f"template: :1: {err}\n")
            return 1
        return 0
    sys.stdout.write(
        f"Client: Docker Engine - Community\n Version:    {DOCKER_VERSION}\n Context:    default\n"
        f" Debug Mode: false\n\nServer:\n Containers: {info['Containers']}\n"
        f"  Running: {info['ContainersRunning']}\n  Paused: 0\n"
        f"  Stopped: {info['ContainersStopped']}\n Images: {info['Images']}\n"
        f" Server Version: {DOCKER_VERSION}\n Storage Driver: overlay2\n Cgroup Driver: cgroupfs\n"
        f" Cgroup Version: 2\n Runtimes: {' '.join(info['Runtimes'])}\n"
        f" Default Runtime: {info['DefaultRuntime']}\n Kernel Version: {info['KernelVersion']}\n"
        f" Operating System: {info['OperatingSystem']}\n OSType: linux\n Architecture: x86_64\n"
        f" Docker Root Dir: /var/lib/docker\n")
    return 0


def cmd_version(args: list[str], running: bool) -> int:
    fmt, _ = format_option(args)
    client = {"Version": DOCKER_VERSION, "ApiVersion": API_VERSION, "GitCommit": DOCKER_COMMIT,
              "Os": "linux", "Arch": "amd64"}
    server = {"Version": DOCKER_VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": "1.24",
              "GitCommit": "45873be", "Os": "linux", "Arch": "amd64"} if running else None
    if fmt:
        sys.stdout.write(render(fmt, {"Client": client, "Server": server}) + "\n")
    else:
        sys.stdout.write("Client: Docker Engine - Community\n"
                         f" Version:           {DOCKER_VERSION}\n"
                         f" API version:       {API_VERSION}\n Git commit:        {DOCKER_COMMIT}\n"
                         " OS/Arch:           linux/amd64\n")
        if running:
            sys.stdout.write(f"\nServer: Docker Engine - Community\n Engine:\n  Version:          "
                             f"{DOCKER_VERSION}\n  API version:      {API_VERSION} (minimum "
                             "version 1.24)\n")
    if not running:
        sys.stderr.write(NO_DAEMON + "\n")
        return 1
    return 0


ALIASES = {("image", "pull"): "pull", ("image", "inspect"): "image-inspect",
           ("image", "ls"): "images", ("image", "list"): "images", ("image", "rm"): "rmi",
           ("image", "load"): "load", ("container", "run"): "run", ("container", "ls"): "ps",
           ("container", "list"): "ps", ("container", "inspect"): "inspect",
           ("container", "stop"): "stop", ("container", "rm"): "rm", ("container", "logs"): "logs",
           ("container", "update"): "update", ("container", "stats"): "stats",
           ("system", "info"): "info"}


def main(argv: list[str]) -> int:
    """docker CLI: logs every call so tests can count pulls, loads and runs."""
    append_line(CALLS_LOG, json.dumps({"argv": argv, "time": time.time()}))
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write("Usage:  docker [OPTIONS] COMMAND\n")
        return 0
    if argv[0] in ("-v", "--version"):
        sys.stdout.write(f"Docker version {DOCKER_VERSION}, build {DOCKER_COMMIT}\n")
        return 0
    command, args = argv[0], argv[1:]
    if (command, args[0] if args else "") in ALIASES:
        command, args = ALIASES[(command, args[0])], args[1:]
    running = daemon_running()
    if command == "version":
        return cmd_version(args, running)
    if not running:
        prefix = "docker: " if command == "run" else ""
        sys.stderr.write(prefix + NO_DAEMON + "\n")
        return 125 if command == "run" else 1
    handlers = {
        "pull": cmd_pull, "images": cmd_images, "load": cmd_load, "run": cmd_run, "ps": cmd_ps,
        "inspect": cmd_inspect, "info": cmd_info, "image-inspect": cmd_image_inspect,
        "rmi": lambda a: cmd_rmi(a, load_containers()),
        "stop": lambda a: cmd_stop_rm("stop", a), "rm": lambda a: cmd_stop_rm("rm", a),
        "logs": lambda a: cmd_stop_rm("logs", a), "update": cmd_update, "stats": cmd_stats,
    }
    if command not in handlers:
        sys.stderr.write(f"docker: unknown command: docker {command}\n\nRun 'docker --help' for "
                         "more information\n")
        return 1
    return handlers[command](args)


CONTAINERD_VERSION = "1.7.27"


def containerd_main(argv: list[str]) -> int:
    if argv[:1] in (["--version"], ["-v"]):
        sys.stdout.write(f"containerd containerd.io {CONTAINERD_VERSION} "
                         "05044ec0a9a75232cad458027ca83437aae3f4da\n")
        return 0
    path = "/etc/containerd/config.toml"
    if argv[:1] in (["--config"], ["-c"]) and len(argv) > 1:
        path, argv = argv[1], argv[2:]
    if argv[:2] == ["config", "dump"]:
        # Real `config dump` prints the merged config the daemon would load from disk.
        text = read_text(path, "") or ""
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return 0
    if argv[:2] == ["config", "default"]:
        sys.stdout.write('version = 2\nroot = "/var/lib/containerd"\nstate = "/run/containerd"\n')
        return 0
    sys.stderr.write("containerd (test double): start it with /etc/init.d/containerd\n")
    return 1
