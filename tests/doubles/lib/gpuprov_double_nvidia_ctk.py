# TEST DOUBLE for gpuprov's test fleet: NVIDIA Container Toolkit programs. Never install
# on real hosts.
"""nvidia-ctk, nvidia-container-runtime(-hook) and nvidia-container-cli doubles.

`nvidia-ctk runtime configure` edits daemon.json / config.toml the way the real
tool does, so gpuprov's own merge can be compared with it.
"""

from __future__ import annotations

import json
import sys

from gpuprov_double import (
    all_gpus,
    cuda_version,
    dpkg_status,
    host_path,
    nvidia_loaded_version,
    nvml_state,
    read_text,
    upstream_version,
    write_text,
)

# Real commit ids are not reproduced; these stand in for them.
COMMITS = {"1.17.8": "f202b80a9b9d0db00d9b1d73c0128c8962c55f4d",
           "1.18.0": "f8daa5e26de9fd7eb79259040b6dd5a52060048c"}


def _version(package: str) -> str:
    return upstream_version(dpkg_status().get(package, "0.0.0-0"))


def _info(message: str) -> None:
    # Real nvidia-ctk logs through logrus to stderr: 'INFO[0000] message'.
    sys.stderr.write(f"INFO[0000] {message}\n")


def configure_docker(path: str, set_default: bool, dry_run: bool) -> int:
    text = read_text(path)
    if text is None or not text.strip():
        _info("Config file does not exist; using empty config")
        config: dict = {}
    else:
        _info(f"Loading config from {path}")
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            sys.stderr.write(f"ERRO[0000] unable to load config: {err}\n")
            return 1
    runtimes = config.setdefault("runtimes", {})
    runtimes["nvidia"] = {"args": [], "path": "nvidia-container-runtime"}
    if set_default:
        config["default-runtime"] = "nvidia"
    # Go's json.MarshalIndent of a map: sorted keys, 4-space indent, no trailing newline.
    output = json.dumps(config, indent=4, sort_keys=True)
    if dry_run:
        sys.stdout.write(output + "\n")
        return 0
    write_text(path, output)
    _info(f"Wrote updated config to {path}")
    _info("It is recommended that docker daemon be restarted.")
    return 0


CONTAINERD_SECTION = '''
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  privileged_without_host_devices = false
  runtime_engine = ""
  runtime_root = ""
  runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
    BinaryName = "/usr/bin/nvidia-container-runtime"
'''


def configure_containerd(path: str, set_default: bool, dry_run: bool) -> int:
    text = read_text(path, "") or ""
    _info(f"Using config version 2 from {path}")
    out = text
    if not any(line.strip().startswith("version") for line in out.splitlines()):
        out = "version = 2\n" + out
    if "containerd.runtimes.nvidia]" not in out:
        out = out.rstrip("\n") + "\n" + CONTAINERD_SECTION
    if set_default and 'default_runtime_name = "nvidia"' not in out:
        out += ('\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                '  default_runtime_name = "nvidia"\n')
    if dry_run:
        sys.stdout.write(out)
        return 0
    write_text(path, out)
    _info(f"Wrote updated config to {path}")
    _info("It is recommended that containerd daemon be restarted.")
    return 0


def cdi_generate(args: list[str]) -> int:
    """`nvidia-ctk cdi generate --output=PATH`: a spec naming the loaded driver's
    libraries by version, as the real one does (gpuprov regenerates on a change)."""
    output = next((a.partition("=")[2] for a in args if a.startswith("--output=")), "")
    version = nvidia_loaded_version()
    if not version:
        sys.stderr.write("ERRO[0000] failed to generate CDI spec: failed to initialize NVML: "
                         "Driver Not Loaded\n")
        return 1
    spec = ("---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: all\n"
            "containerEdits:\n  mounts:\n"
            f"  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.{version}\n"
            f"    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.{version}\n")
    if not output:
        sys.stdout.write(spec)
        return 0
    write_text(output, spec)
    _info(f"Generated CDI spec with version 0.5.0 at {output}")
    return 0


def main(argv: list[str]) -> int:
    """nvidia-ctk."""
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write("NAME:\n   NVIDIA Container Toolkit CLI\n\nUSAGE:\n   nvidia-ctk "
                         "[global options] command [command options]\n")
        return 0
    if argv[0] in ("--version", "-v", "version"):
        version = _version("nvidia-container-toolkit-base")
        sys.stdout.write(f"NVIDIA Container Toolkit CLI version {version}\n"
                         f"commit: {COMMITS.get(version, '0' * 40)}\n")
        return 0
    if argv[:2] == ["cdi", "generate"]:
        return cdi_generate(argv[2:])
    if argv[:2] != ["runtime", "configure"]:
        sys.stderr.write(f"nvidia-ctk: No help topic for '{argv[0]}'\n")
        return 3
    opts: dict[str, str] = {}
    rest = argv[2:]
    while rest:
        arg = rest.pop(0)
        key, eq, value = arg.partition("=")
        key = key.lstrip("-")
        if key in ("set-as-default", "dry-run"):
            opts[key] = value or "true"
        elif key in ("runtime", "config", "config-mode", "nvidia-set-as-default"):
            opts[key] = value if eq else (rest.pop(0) if rest else "")
        else:
            sys.stderr.write(f"Incorrect Usage: flag provided but not defined: -{key}\n")
            return 1
    runtime = opts.get("runtime", "docker")
    set_default = opts.get("set-as-default", "false") == "true"
    dry_run = opts.get("dry-run", "false") == "true"
    if runtime == "docker":
        return configure_docker(opts.get("config", "/etc/docker/daemon.json"), set_default,
                                dry_run)
    if runtime == "containerd":
        return configure_containerd(opts.get("config", "/etc/containerd/config.toml"),
                                    set_default, dry_run)
    sys.stderr.write(f'ERRO[0000] unrecognized runtime \'{runtime}\'\n')
    return 1


def runtime_main(argv: list[str]) -> int:
    """nvidia-container-runtime: only --version is meaningful without a real runc."""
    version = _version("nvidia-container-toolkit-base")
    if argv[:1] in (["--version"], ["-v"]):
        sys.stdout.write(f"NVIDIA Container Runtime version {version}\n"
                         f"commit: {COMMITS.get(version, '0' * 40)}\nspec: 1.2.0\n\n"
                         "runc version 1.2.5\ncommit: v1.2.5-0-g59923ef\nspec: 1.2.0\n"
                         "go: go1.23.7\nlibseccomp: 2.5.4\n")
        return 0
    sys.stderr.write("nvidia-container-runtime (test double): no OCI runtime here\n")
    return 1


def hook_main(argv: list[str]) -> int:
    """nvidia-container-runtime-hook."""
    if argv[:1] in (["--version"], ["-version"]):
        version = _version("nvidia-container-toolkit")
        sys.stdout.write(f"NVIDIA Container Runtime Hook version {version}\n"
                         f"commit: {COMMITS.get(version, '0' * 40)}\n")
    return 0


def cli_main(argv: list[str]) -> int:
    """nvidia-container-cli: --version, info, list."""
    version = _version("libnvidia-container-tools")
    if argv[:1] in (["--version"], ["-V"]):
        sys.stdout.write(f"cli-version: {version}\nlib-version: "
                         f"{_version('libnvidia-container1')}\n"
                         "build date: 2025-06-01T00:00+00:00\n")
        return 0
    state, driver = nvml_state()
    if state != "ok" or driver is None:
        reason = "driver not loaded" if state == "no-driver" else "driver/library version mismatch"
        sys.stderr.write(f"nvidia-container-cli: initialization error: nvml error: {reason}\n")
        return 1
    if argv[:1] == ["info"]:
        lines = [f"NVRM version:   {driver}", f"CUDA version:   {cuda_version(driver)}", ""]
        for gpu in all_gpus():
            lines += [f"Device Index:   {gpu.index}", "Device Minor:   " + str(gpu.index),
                      f"Model:          {gpu.name}", "Brand:          Nvidia",
                      f"GPU UUID:       {gpu.uuid}", f"Bus Location:   {gpu.pci_bus_id}",
                      f"Architecture:   {gpu.compute_cap}", ""]
        sys.stdout.write("\n".join(lines))
        return 0
    if argv[:1] == ["list"]:
        paths = [f"/dev/nvidia{g.index}" for g in all_gpus()] + ["/dev/nvidiactl"]
        if host_path("/usr/bin/nvidia-smi").exists():
            paths.append("/usr/bin/nvidia-smi")
        sys.stdout.write("\n".join(paths) + "\n")
        return 0
    sys.stderr.write("Usage: nvidia-container-cli [OPTION...] COMMAND [ARG...]\n")
    return 64
