# TEST DOUBLE for gpuprov's test fleet: docker container commands. Never install on real
# hosts.
"""run, ps, inspect, stop, rm and logs.  A foreground `run` executes its command on the
host with PATH limited to the "image" bin dir of doubles (python with a fake torch), so
what a container can see (nvidia-smi, GPUs) depends on --gpus as on a real host."""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import subprocess
import sys
import time
from typing import Any

from gpuprov_double import all_gpus, doubles_home, dpkg_status, host_path, nvml_state
from gpuprov_double_docker_format import TemplateError, render
from gpuprov_double_docker_images import format_option, print_objects, pull
from gpuprov_double_docker_limits import LimitError, host_config
from gpuprov_double_docker_state import (
    default_runtime,
    find_image,
    load_containers,
    load_images,
    runtimes,
    save_containers,
    start_id,
)

VALUE_FLAGS = {"--name", "--gpus", "-p", "--publish", "-v", "--volume", "-e", "--env", "-u",
               "--user", "--security-opt", "--restart", "--entrypoint", "--runtime", "-w",
               "--workdir", "--network", "--net", "--shm-size", "--ipc", "-h", "--hostname",
               "-l", "--label", "--device", "--cap-add", "--cap-drop", "--group-add", "--ulimit",
               "--mount", "--pull", "--platform", "-m", "--memory", "--cpus", "--env-file",
               "--log-driver", "--pids-limit", "--memory-swap"}
BOOL_FLAGS = {"--rm", "-d", "--detach", "-i", "--interactive", "-t", "--tty", "--privileged",
              "--init", "-q", "--quiet"}
NO_GPU_DRIVER = ('docker: Error response from daemon: could not select device driver "" with '
                 'capabilities: [[gpu]].')
OCI_PREFIX = ("docker: Error response from daemon: failed to create task for container: failed to "
              "create shim task: OCI runtime create failed: runc create failed: unable to start "
              "container process: error during container init: ")


class RunError(Exception):
    def __init__(self, message: str, code: int = 125) -> None:
        super().__init__(message)
        self.code = code


def parse_run(args: list[str]) -> tuple[dict[str, list[str]], str, list[str]]:
    opts: dict[str, list[str]] = {}
    rest = list(args)
    while rest and rest[0].startswith("-"):
        arg = rest.pop(0)
        if arg == "--":
            break
        key, eq, value = arg.partition("=")
        if key in VALUE_FLAGS:
            if not eq:
                if not rest:
                    raise RunError(f"flag needs an argument: {key}")
                value = rest.pop(0)
            opts.setdefault(key, []).append(value)
        elif arg in BOOL_FLAGS:
            opts[arg] = ["true"]
        elif arg.startswith("-") and not arg.startswith("--") and all(
                f"-{c}" in BOOL_FLAGS for c in arg[1:]):
            for c in arg[1:]:
                opts[f"-{c}"] = ["true"]
        else:
            raise RunError(f"unknown flag: {key}\nSee 'docker run --help'.")
    if not rest:
        raise RunError('docker: \'docker run\' requires at least 1 argument.')
    return opts, rest[0], rest[1:]


def gpu_request(value: str) -> tuple[dict[str, Any], str]:
    """--gpus value -> (DeviceRequest, NVIDIA_VISIBLE_DEVICES).  The value is a CSV
    record, which is why '"device=0,1"' needs the inner quotes."""
    fields = next(csv.reader([value.strip("'")]))
    request: dict[str, Any] = {"Driver": "", "Count": 0, "DeviceIDs": None,
                               "Capabilities": [["gpu"]], "Options": {}}
    for field in fields:
        key, eq, val = field.partition("=")
        if not eq and key == "all":
            request["Count"] = -1
        elif not eq and key.isdigit():
            request["Count"] = int(key)
        elif key == "count":
            request["Count"] = -1 if val == "all" else int(val)
        elif key == "device":
            request["DeviceIDs"] = val.split(",")
        elif key in ("capabilities", "driver"):
            continue
        else:
            raise RunError(f'invalid argument "{value}" for "--gpus" flag: unexpected key '
                           f"'{key}' in '{field}'\nSee 'docker run --help'.")
    if request["DeviceIDs"]:
        visible = ",".join(request["DeviceIDs"])
    elif request["Count"] == -1:
        visible = "all"
    else:
        visible = ",".join(str(i) for i in range(request["Count"]))
    return request, visible


def check_gpus(visible: str) -> None:
    """What dockerd + nvidia-container-cli decide before a GPU container starts."""
    if "nvidia" not in runtimes() or "nvidia-container-toolkit" not in dpkg_status():
        raise RunError(NO_GPU_DRIVER)
    state, _ = nvml_state()
    if state != "ok":
        reason = "driver not loaded" if state == "no-driver" else "driver/library version mismatch"
        raise RunError(OCI_PREFIX + "error running prestart hook #0: exit status 1, stdout: , "
                       f"stderr: nvidia-container-cli: initialization error: nvml error: {reason}"
                       ": unknown.")
    known = {str(g.index) for g in all_gpus()} | {g.uuid for g in all_gpus()}
    for device in ([] if visible in ("all", "") else visible.split(",")):
        if device not in known:
            raise RunError(OCI_PREFIX + "error running prestart hook #0: exit status 1, stdout: , "
                           f"stderr: nvidia-container-cli: device error: {device}: unknown "
                           "device: unknown.")


def port_bindings(values: list[str]) -> dict[str, list[dict[str, str]]]:
    bindings: dict[str, list[dict[str, str]]] = {}
    for value in values:
        spec, _, proto = value.partition("/")
        parts = spec.split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        host_port = parts[-2] if len(parts) >= 2 else ""
        bindings.setdefault(f"{parts[-1]}/{proto or 'tcp'}", []).append(
            {"HostIp": host_ip, "HostPort": host_port})
    return bindings


def is_running(container: dict[str, Any]) -> bool:
    """Running until stopped, or until the daemon restarts unless the restart policy
    brings it back (always / unless-stopped)."""
    if container["State"]["Status"] != "running":
        return False
    policy = container["HostConfig"]["RestartPolicy"]["Name"]
    return container["_start_id"] == start_id() or policy in ("always", "unless-stopped")


def view(container: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in container.items() if not k.startswith("_")}
    running = is_running(container)
    shown["State"] = dict(container["State"], Running=running,
                          Status="running" if running else
                          ("created" if container["State"]["Status"] == "created" else "exited"))
    return shown


def find_container(containers: dict[str, dict[str, Any]], ref: str) -> dict[str, Any] | None:
    for container in containers.values():
        if container["Name"] == "/" + ref.lstrip("/") or container["Id"].startswith(ref):
            return container
    return None


def cmd_run(args: list[str]) -> int:
    try:
        return _run(args)
    except RunError as err:
        sys.stderr.write(str(err) + "\n")
        return err.code


def _run(args: list[str]) -> int:
    opts, ref, cmd = parse_run(args)
    try:
        limits = host_config(opts)
    except LimitError as err:
        raise RunError(str(err), err.code) from None
    get = opts.get
    containers = load_containers()
    name = (get("--name") or [None])[-1]
    if name and (clash := find_container(containers, name)) and clash["Name"] == f"/{name}":
        raise RunError("docker: Error response from daemon: Conflict. The container name "
                       f'"/{name}" is already in use by container "{clash["Id"]}". You have to '
                       "remove (or rename) that container to be able to reuse that name.")
    runtime = (get("--runtime") or [default_runtime()])[-1]
    if runtime not in runtimes():
        raise RunError(f"docker: Error response from daemon: unknown or invalid runtime name: "
                       f"{runtime}.")
    env = dict(e.split("=", 1) if "=" in e else (e, os.environ.get(e, "")) for e in get("-e", [])
               + get("--env", []))
    request, visible = None, None
    if get("--gpus"):
        request, visible = gpu_request(get("--gpus")[-1])
    elif runtime == "nvidia" and "NVIDIA_VISIBLE_DEVICES" in env:
        visible = env["NVIDIA_VISIBLE_DEVICES"]  # the legacy env-var way with the nvidia runtime
    if visible is not None:
        check_gpus(visible)
    record = find_image(load_images(), ref)
    if record is None and (get("--pull") or ["missing"])[-1] == "never":
        raise RunError(f"docker: Error response from daemon: No such image: {ref}")
    if record is None:
        sys.stderr.write(f"Unable to find image '{ref}' locally\n")
        record, error = pull(ref, out=sys.stderr)
        if record is None:
            raise RunError(f"docker: Error response from daemon: {error}\n\n"
                           "Run 'docker run --help' for more information")
    image_cfg = record.get("Config", {})
    entrypoint = get("--entrypoint") or image_cfg.get("Entrypoint")
    command = cmd or ([] if get("--entrypoint") else image_cfg.get("Cmd") or [])
    detach = "true" in (get("-d", []) + get("--detach", []))
    restart = (get("--restart") or ["no"])[-1]
    policy, _, retries = restart.partition(":")
    cid = secrets.token_hex(32)
    container = {
        "Id": cid,
        "Created": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        "Path": (list(entrypoint or []) + command or [""])[0],
        "Args": (list(entrypoint or []) + command)[1:],
        "State": {"Status": "running", "Running": True, "ExitCode": 0,
                  "StartedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "Image": record["Id"],
        "Name": "/" + (name or f"gpuprov_double_{cid[:6]}"),
        "HostConfig": {
            "Binds": get("-v", []) + get("--volume", []) or None,
            "PortBindings": port_bindings(get("-p", []) + get("--publish", [])),
            "RestartPolicy": {"Name": policy, "MaximumRetryCount": int(retries or 0)},
            "AutoRemove": "--rm" in opts,
            "SecurityOpt": get("--security-opt") or None,
            "DeviceRequests": [request] if request else None,
            "Runtime": runtime,
            "Privileged": "--privileged" in opts,
            "CapAdd": get("--cap-add") or None,
            "CapDrop": get("--cap-drop") or None,
            "GroupAdd": get("--group-add") or None,
            **limits,
        },
        "Config": {
            "Hostname": cid[:12],
            "User": (get("-u", []) + get("--user", []) or [""])[-1],
            "Env": [f"{k}={v}" for k, v in env.items()] + image_cfg.get("Env", []),
            "Cmd": command or None,
            "Entrypoint": list(entrypoint) if entrypoint else None,
            "Image": ref,
            "ExposedPorts": image_cfg.get("ExposedPorts"),
            # --label k=v (a bare k is k=""), over the image's own labels, as docker does
            "Labels": {**(image_cfg.get("Labels") or {}),
                       **dict((lb.split("=", 1) + [""])[:2]
                              for lb in get("-l", []) + get("--label", []))},
        },
        "_start_id": start_id(),
    }
    containers[cid] = container
    save_containers(containers)
    if detach:
        sys.stdout.write(cid + "\n")
        return 0
    code = _execute(list(entrypoint or []) + command, env, visible, "-i" in opts)
    containers = load_containers()
    if "--rm" in opts:
        containers.pop(cid, None)
    else:
        containers[cid]["State"].update(Status="exited", Running=False, ExitCode=code)
    save_containers(containers)
    return code


def _execute(argv: list[str], env: dict[str, str], visible: str | None, stdin: bool) -> int:
    home = doubles_home()
    path = [str(home / "image" / "bin")]
    # The toolkit injects the host's nvidia-smi into GPU containers, if the host has one.
    if visible is not None and host_path("/usr/bin/nvidia-smi").exists():
        path.append(str(home / "image-gpu" / "bin"))
    child_env = {
        "PATH": ":".join(path), "HOME": "/root", "HOSTNAME": "container",
        "GPUPROV_TEST_DOUBLE_HOME": str(home),
        "GPUPROV_TEST_DOUBLE_PYTHON": sys.executable,
        "PYTHONPATH": f"{home / 'image' / 'site-packages'}:{home / 'lib'}",
        **env,
    }
    if "GPUPROV_TEST_DOUBLE_ROOT" in os.environ:
        child_env["GPUPROV_TEST_DOUBLE_ROOT"] = os.environ["GPUPROV_TEST_DOUBLE_ROOT"]
    child_env["NVIDIA_VISIBLE_DEVICES"] = visible if visible is not None else "void"
    program = shutil.which(argv[0], path=child_env["PATH"]) if argv else None
    if program is None:
        sys.stderr.write(OCI_PREFIX + f'exec: "{argv[0] if argv else ""}": executable file not '
                         "found in $PATH: unknown.\n")
        return 127
    result = subprocess.run([program, *argv[1:]], env=child_env, cwd=host_path("/"),
                            stdin=None if stdin else subprocess.DEVNULL, check=False)
    return result.returncode


def cmd_ps(args: list[str]) -> int:
    fmt, rest = format_option(args)
    show_all = "-a" in rest or "--all" in rest
    rows = []
    for container in load_containers().values():
        shown = view(container)
        if not show_all and not shown["State"]["Running"]:
            continue
        ports = ", ".join(f"{b['HostIp'] or '0.0.0.0'}:{b['HostPort']}->{port}"
                          for port, binds in shown["HostConfig"]["PortBindings"].items()
                          for b in binds)
        rows.append({"ID": shown["Id"][:12], "Image": shown["Config"]["Image"],
                     "Command": '"' + " ".join([shown["Path"], *shown["Args"]])[:20] + '"',
                     "CreatedAt": shown["Created"], "RunningFor": "1 minute ago",
                     "Ports": ports, "State": shown["State"]["Status"],
                     "Status": "Up 1 minute" if shown["State"]["Running"] else
                     f"Exited ({shown['State']['ExitCode']}) 1 minute ago",
                     "Names": shown["Name"].lstrip("/"), "Labels": "", "Mounts": "",
                     "Networks": "bridge", "LocalVolumes": "0", "Size": "0B"})
    if "-q" in rest or "--quiet" in rest:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    if fmt:
        return print_objects(rows, fmt)
    sys.stdout.write("CONTAINER ID   IMAGE                    COMMAND                  CREATED"
                     "          STATUS          PORTS     NAMES\n")
    for r in rows:
        sys.stdout.write(f"{r['ID']}   {r['Image']:<24} {r['Command']:<24} {r['RunningFor']:<16} "
                         f"{r['Status']:<15} {r['Ports']:<9} {r['Names']}\n")
    return 0


def cmd_inspect(args: list[str]) -> int:
    """docker inspect / container inspect: containers first, then images (as real).

    Like the real CLI: every object found is printed (a template runs once per
    object), then one error line per name not found or not rendered, in the
    order given, and the exit status is 1 if there was any; `--type` restricts
    the search; `--` ends the options."""
    kind, rest = None, []
    it = iter(args)
    for arg in it:
        if arg == "--":
            rest.extend(it)
        elif arg == "--type":
            kind = next(it, "")
        elif arg.startswith("--type="):
            kind = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if kind not in (None, "container", "image"):
        sys.stderr.write(f'unknown type: "{kind}"\n')
        return 1
    fmt, refs = format_option(rest)
    containers, images = load_containers(), load_images()
    found, errors, rendered = [], [], 0
    for ref in refs:
        container = find_container(containers, ref) if kind != "image" else None
        image = find_image(images, ref) if kind != "container" and not container else None
        if not (container or image):
            # --type asks the daemon once and shows its answer; without, the CLI's own
            errors.append(f"Error response from daemon: No such {kind}: {ref}" if kind
                          else f"Error: No such object: {ref}")
            continue
        obj = view(container) if container else image
        if fmt is None or fmt == "json":
            found.append(obj)
            continue
        try:
            sys.stdout.write(render(fmt, obj) + "\n")
            rendered += 1
        except TemplateError as err:
            errors.append(f"template parsing error: template: :1: {err}")
    if fmt is None or fmt == "json":
        print_objects(found, fmt)
    elif not rendered:
        sys.stdout.write("\n")   # the real CLI's template output when nothing was found
    for line in errors:
        sys.stderr.write(line + "\n")
    return 1 if errors else 0


def cmd_stop_rm(verb: str, args: list[str]) -> int:
    force = any(a in ("-f", "--force") for a in args)
    containers = load_containers()
    code = 0
    for ref in (a for a in args if not a.startswith("-")):
        container = find_container(containers, ref)
        if container is None:
            sys.stderr.write(f"Error response from daemon: No such container: {ref}\n")
            code = 1
            continue
        running = is_running(container)
        if verb == "rm" and running and not force:
            sys.stderr.write(f'Error response from daemon: cannot remove container '
                             f'"{container["Name"]}": container is running: stop the container '
                             "before removing or force remove\n")
            code = 1
            continue
        if verb == "rm":
            del containers[container["Id"]]
        elif verb == "logs":
            continue
        else:
            container["State"].update(Status="exited", Running=False,
                                      ExitCode=137 if running else container["State"]["ExitCode"])
        if verb != "logs":
            sys.stdout.write(ref + "\n")
    save_containers(containers)
    return code
