"""Unit tests of gpuprov's test doubles (tests/doubles), run with this machine's python3
against a temp dir as GPUPROV_TEST_DOUBLE_ROOT, so nothing on this machine is touched."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprov.facts.nvidia import (
    PROC_DRIVER_VERSION,
    SYS_MODULE_VERSION,
    LoadedModule,
    NvidiaSmi,
)
from tests.doubles.make_image_archive import make_image_archive

DOUBLES = Path(__file__).resolve().parent.parent / "doubles"
sys.path.insert(0, str(DOUBLES / "lib"))
from gpuprov_double_docker_state import image_id  # noqa: E402

IMAGE = "ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"
IMAGE_OLD = "ghcr.io/example-lab/pytorch-cuda:2.8.0-cuda12.8"


class Host:
    """A temp dir standing in for a host's root file system."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def write(self, p: str, text: str) -> None:
        self.path(p).parent.mkdir(parents=True, exist_ok=True)
        self.path(p).write_text(text)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NVIDIA_")}
        env.update(GPUPROV_TEST_DOUBLE_ROOT=str(self.root), GPUPROV_TEST_DOUBLE_HOME=str(DOUBLES),
                   GPUPROV_TEST_DOUBLE_PYTHON=sys.executable, **extra)
        return env

    def run(self, tool: str, *args: str, stdin: bytes | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
        path = DOUBLES / "bin" / tool
        cmd = [sys.executable, str(path)] if "python3" in path.read_text().splitlines()[0] \
            else ["sh", str(path)]
        result = subprocess.run(cmd + list(args), env=self.env(**env), capture_output=True,
                                input=stdin, timeout=60, check=False)
        return subprocess.CompletedProcess(result.args, result.returncode,
                                           result.stdout.decode(), result.stderr.decode())

    def driver(self, installed: str | None, loaded: str | None) -> None:
        for p, value in (("/var/lib/gpuprov-test-double/nvidia/installed-version", installed),
                         ("/sys/module/nvidia/version", loaded)):
            if value:
                self.write(p, value + "\n")
            else:
                self.path(p).unlink(missing_ok=True)

    def dpkg(self, **packages: str) -> None:
        self.write("/var/lib/dpkg/status", "".join(
            f"Package: {name.replace('_', '-')}\nStatus: install ok installed\nVersion: {v}\n\n"
            for name, v in packages.items()))

    def daemon(self, config: dict | None = None) -> None:
        """What /etc/init.d/docker start leaves behind; the pid is this test's (alive)."""
        self.write("/run/docker.pid", f"{os.getpid()}\n")
        self.write("/run/gpuprov-test-double/docker/effective-daemon.json",
                   json.dumps(config or {}))
        self.write("/run/gpuprov-test-double/docker/start-id", "boot-1\n")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.fixture
def gpu_host(host: Host) -> Host:
    """Driver 580 loaded, toolkit installed, docker running with the nvidia runtime."""
    host.driver("580.95.05", "580.95.05")
    host.dpkg(nvidia_container_toolkit="1.17.8-1", nvidia_container_toolkit_base="1.17.8-1")
    host.write("/usr/bin/nvidia-smi", "")
    host.daemon({"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}})
    return host


# ------------------------------------------------------------------ nvidia-smi
def test_nvidia_smi_without_driver(host: Host) -> None:
    result = host.run("nvidia-smi")
    assert result.returncode == 9
    assert result.stdout.startswith("NVIDIA-SMI has failed because it couldn't communicate")


def test_nvidia_smi_version_mismatch_until_reboot(host: Host) -> None:
    host.driver("580.95.05", "550.163.01")
    result = host.run("nvidia-smi")
    assert result.returncode == 18
    assert result.stdout == ("Failed to initialize NVML: Driver/library version mismatch\n"
                             "NVML library version: 580.95\n")


@pytest.mark.parametrize("version,cuda", [("470.256.02", "11.4"), ("535.274.02", "12.2"),
                                          ("550.163.01", "12.4"), ("580.95.05", "13.0")])
def test_nvidia_smi_table(host: Host, version: str, cuda: str) -> None:
    host.driver(version, version)
    out = host.run("nvidia-smi").stdout
    assert f"Driver Version: {version}" in out and f"CUDA Version: {cuda}" in out
    assert out.count("NVIDIA A100-SXM4-80GB") == 2
    assert {len(line) for line in out.splitlines()[1:] if line} == {91}


def test_nvidia_smi_query_csv(host: Host) -> None:
    host.driver("580.95.05", "580.95.05")
    fields = "index,name,driver_version,memory.used,memory.total,utilization.gpu,temperature.gpu"
    out = host.run("nvidia-smi", f"--query-gpu={fields}", "--format=csv").stdout.splitlines()
    assert out[0] == ("index, name, driver_version, memory.used [MiB], memory.total [MiB], "
                      "utilization.gpu [%], temperature.gpu")
    assert out[1] == "0, NVIDIA A100-SXM4-80GB, 580.95.05, 1 MiB, 81920 MiB, 0 %, 32"
    bare = host.run("nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits")
    assert bare.stdout.splitlines() == ["0, NVIDIA A100-SXM4-80GB, 580.95.05, 1, 81920, 0, 32",
                                        "1, NVIDIA A100-SXM4-80GB, 580.95.05, 1, 81920, 0, 32"]
    bad = host.run("nvidia-smi", "--query-gpu=bogus", "--format=csv")
    assert bad.returncode == 2 and 'Field "bogus" is not a valid field' in bad.stdout


def test_nvidia_smi_answers_the_query_gpuprov_facts_sends(host: Host) -> None:
    # The exact arguments of NvidiaSmi's probe (`gpuprov facts`' gpu), and its banner grep.
    host.driver("580.95.05", "580.95.05")
    probe = NvidiaSmi().command().shell()
    query = re.search(r"nvidia-smi (--query-gpu=\S+) (--format=\S+)", probe)
    assert query is not None
    answer = host.run("nvidia-smi", *query.groups())
    banner = re.findall(r"CUDA Version: *[0-9.]*", host.run("nvidia-smi").stdout)
    output = answer.stdout + f"@@gpuprov-nvidia-smi {answer.returncode}\n" + "\n".join(banner)
    driver = NvidiaSmi().process(output, 0)
    assert (driver.state, driver.version, driver.cuda_version) == ("ok", "580.95.05", "13.0")
    assert [(g.index, g.name, g.memory_total_mib) for g in driver.gpus] == [
        (0, "NVIDIA A100-SXM4-80GB", 81920), (1, "NVIDIA A100-SXM4-80GB", 81920)]
    assert all(g.uuid.startswith("GPU-") for g in driver.gpus)


def test_nvidia_smi_gpu_list_selection_and_visibility(host: Host) -> None:
    host.driver("580.95.05", "580.95.05")
    host.write("/etc/gpuprov-test-double/gpus.json", json.dumps([
        {"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "uuid": "GPU-aaa",
         "pci_bus_id": "00000000:18:00.0"},
        {"name": "NVIDIA L4", "memory_total_mib": 23034, "uuid": "GPU-bbb",
         "pci_bus_id": "00000000:2A:00.0"}]))
    assert host.run("nvidia-smi", "-L").stdout == (
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaa)\nGPU 1: NVIDIA L4 (UUID: GPU-bbb)\n")
    one = host.run("nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", "1")
    assert one.stdout == "NVIDIA L4, 8.9\n"
    assert host.run("nvidia-smi", "-L", NVIDIA_VISIBLE_DEVICES="GPU-bbb").stdout.startswith(
        "GPU 1: NVIDIA L4")
    none = host.run("nvidia-smi", "-L", NVIDIA_VISIBLE_DEVICES="none")
    assert none.returncode == 6 and none.stdout == "No devices were found\n"
    assert host.run("nvidia-smi", "-i", "7").returncode == 6


# ------------------------------------------------------------------ toolkit
def test_nvidia_ctk_configures_docker_like_the_real_one(host: Host) -> None:
    host.dpkg(nvidia_container_toolkit_base="1.18.0-1")
    host.write("/etc/docker/daemon.json", '{"log-driver": "json-file", "data-root": "/srv/d"}')
    result = host.run("nvidia-ctk", "runtime", "configure", "--runtime=docker")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "INFO[0000] Loading config from /etc/docker/daemon.json",
        "INFO[0000] Wrote updated config to /etc/docker/daemon.json",
        "INFO[0000] It is recommended that docker daemon be restarted."]
    text = host.path("/etc/docker/daemon.json").read_text()
    assert json.loads(text) == {"data-root": "/srv/d", "log-driver": "json-file", "runtimes": {
        "nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    assert '\n    "data-root"' in text
    host.run("nvidia-ctk", "runtime", "configure", "--runtime=docker", "--set-as-default")
    assert json.loads(host.path("/etc/docker/daemon.json").read_text())["default-runtime"] == \
        "nvidia"
    assert host.run("nvidia-ctk", "--version").stdout.startswith(
        "NVIDIA Container Toolkit CLI version 1.18.0\ncommit: ")


def test_nvidia_ctk_configures_containerd(host: Host) -> None:
    host.write("/etc/containerd/config.toml", (DOUBLES / "data/containerd-config.toml").read_text())
    for _ in range(2):  # idempotent
        result = host.run("nvidia-ctk", "runtime", "configure", "--runtime=containerd")
        assert result.returncode == 0
    text = host.path("/etc/containerd/config.toml").read_text()
    assert text.count('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]') == 1
    assert 'BinaryName = "/usr/bin/nvidia-container-runtime"' in text
    assert host.run("containerd", "config", "dump").stdout == text
    # --config: how gpuprov validates a new file before it replaces config.toml
    host.write("/tmp/new.toml", "version = 2\n")
    assert host.run("containerd", "--config", "/tmp/new.toml", "config",
                    "dump").stdout == "version = 2\n"


def test_nvidia_ctk_cdi_generate_names_the_loaded_driver(host: Host) -> None:
    assert host.run("nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"
                    ).returncode == 1   # no driver loaded
    host.driver("580.95.05", "580.95.05")
    assert host.run("nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"
                    ).returncode == 0
    assert "libcuda.so.580.95.05" in host.path("/etc/cdi/nvidia.yaml").read_text()


# ------------------------------------------------------------------ dockerd / init
def test_dockerd_validate(host: Host) -> None:
    host.write("/etc/d.json", '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}')
    ok = host.run("dockerd", "--validate", "--config-file", "/etc/d.json")
    assert (ok.returncode, ok.stdout) == (0, "configuration OK\n")
    host.write("/etc/d.json", '{"runtime": {}}')
    bad = host.run("dockerd", "--validate", "--config-file", "/etc/d.json")
    assert bad.returncode == 1
    assert bad.stderr == ("unable to configure the Docker daemon with file /etc/d.json: the "
                          "following directives don't match any configuration option: runtime\n")
    host.write("/etc/d.json", "{")
    assert host.run("dockerd", "--validate", "--config-file", "/etc/d.json").returncode == 1


def test_docker_init_script_refuses_invalid_config(host: Host) -> None:
    host.write("/etc/docker/daemon.json", "{not json")
    script = str(DOUBLES / "init.d" / "docker")
    start = subprocess.run(["sh", script, "start"], env=host.env(), capture_output=True,
                           text=True, check=False)
    assert start.returncode == 1 and "failed!" in start.stdout
    assert not host.path("/run/docker.pid").exists()
    status = subprocess.run(["sh", script, "status"], env=host.env(), capture_output=True,
                            text=True, check=False)
    assert (status.returncode, status.stdout) == (3, "Docker is not running.\n")


# ------------------------------------------------------------------ maintainer scripts
def _postinst(host: Host, template: str, version: str, *args: str) -> subprocess.CompletedProcess:
    text = (DOUBLES / "maint" / template).read_text().replace("@VERSION@", version)
    return subprocess.run(["sh", "-c", text, template, *args], env=host.env(),
                          capture_output=True, text=True, check=False)


def test_headless_postinst_dkms_build_and_boot_hook(host: Host) -> None:
    kver = platform.release()
    missing = _postinst(host, "nvidia-headless.postinst", "550.163.01", "configure")
    assert missing.returncode == 1
    assert (f"Error! Your kernel headers for kernel {kver} cannot be found at "
            f"/lib/modules/{kver}/build or /lib/modules/{kver}/source.") in missing.stderr
    assert not host.path("/sys/module/nvidia").exists()   # a failed build loads nothing
    host.path(f"/lib/modules/{kver}/build").mkdir(parents=True)
    assert _postinst(host, "nvidia-headless.postinst", "550.163.01", "configure").returncode == 0
    # first install "loads" the module where a real kernel shows it, nvidia-smi agrees
    assert host.path("/sys/module/nvidia/version").read_text() == "550.163.01\n"
    assert LoadedModule().process(_loaded_files(host), 0) == "550.163.01"
    assert host.run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"
                    ).stdout == "550.163.01\n550.163.01\n"
    # Upgrade: the old module stays loaded until the (simulated) reboot.
    assert _postinst(host, "nvidia-headless.postrm", "550.163.01", "remove").returncode == 0
    assert _postinst(host, "nvidia-headless.postinst", "580.95.05", "configure").returncode == 0
    assert host.path("/sys/module/nvidia/version").read_text() == "550.163.01\n"
    assert host.run("nvidia-smi").returncode == 18
    host.write("/etc/gpuprov-test-double/boot.d/nvidia", (DOUBLES / "boot.d/nvidia").read_text())
    host.path("/etc/gpuprov-test-double/boot.d/nvidia").chmod(0o755)
    boot = subprocess.run(["sh", str(DOUBLES / "boot")], env=host.env(), check=False)
    assert boot.returncode == 0
    assert host.path("/sys/module/nvidia/version").read_text() == "580.95.05\n"
    assert LoadedModule().process(_loaded_files(host), 0) == "580.95.05"
    assert "Driver Version: 580.95.05" in host.run("nvidia-smi").stdout
    # Removed, then rebooted: no module loaded, no /sys/module/nvidia (as on a real kernel)
    assert _postinst(host, "nvidia-headless.postrm", "580.95.05", "purge").returncode == 0
    assert subprocess.run(["sh", str(DOUBLES / "boot")], env=host.env(), check=False
                          ).returncode == 0
    assert not host.path("/sys/module/nvidia").exists()
    assert LoadedModule().process(_loaded_files(host), 1) is None
    assert host.run("nvidia-smi").returncode == 9


def _loaded_files(host: Host) -> str:
    """What LoadedModule's cat prints on the host: the double writes /sys/module only."""
    files = [host.path(SYS_MODULE_VERSION), host.path(PROC_DRIVER_VERSION)]
    return "".join(f.read_text() for f in files if f.exists())


def test_mokutil(host: Host) -> None:
    assert host.run("mokutil", "--sb-state").stdout == "SecureBoot disabled\n"
    host.write("/etc/gpuprov-test-double/secure-boot", "enabled\n")
    assert host.run("mokutil", "--sb-state").stdout == "SecureBoot enabled\n"


# ------------------------------------------------------------------ docker CLI
def test_docker_without_daemon(host: Host) -> None:
    result = host.run("docker", "pull", IMAGE)
    assert result.returncode == 1
    assert result.stderr == ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                             "Is the docker daemon running?\n")
    calls = host.path("/var/lib/gpuprov-test-double/docker/calls.log").read_text().splitlines()
    assert json.loads(calls[0])["argv"] == ["pull", IMAGE]


def test_docker_pull_inspect_and_digest(host: Host) -> None:
    host.daemon()
    missing = host.run("docker", "image", "inspect", IMAGE)
    assert (missing.returncode, missing.stdout) == (1, "[]\n")
    assert missing.stderr == f"Error: No such image: {IMAGE}\n"
    first = host.run("docker", "pull", IMAGE)
    assert first.returncode == 0 and f"Status: Downloaded newer image for {IMAGE}" in first.stdout
    again = host.run("docker", "pull", IMAGE)
    assert f"Status: Image is up to date for {IMAGE}" in again.stdout
    registry = json.loads((DOUBLES / "data/registry.json").read_text())
    digest = registry[IMAGE]["digest"]
    shown = host.run("docker", "image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}",
                     IMAGE).stdout
    assert shown == (f"{registry[IMAGE]['id']} "
                     f'["ghcr.io/example-lab/pytorch-cuda@{digest}"]\n')
    record = json.loads(host.run("docker", "image", "inspect", IMAGE).stdout)[0]
    assert record["RepoTags"] == [IMAGE] and record["Os"] == "linux"
    by_digest = host.run("docker", "pull", f"ghcr.io/example-lab/pytorch-cuda@{digest}")
    assert by_digest.returncode == 0
    unknown = host.run("docker", "pull", "ghcr.io/example-lab/pytorch-cuda:9.9")
    assert unknown.returncode == 1 and "manifest unknown" in unknown.stderr


def test_docker_registry_override_moves_tag(host: Host) -> None:
    host.daemon()
    assert host.run("docker", "pull", IMAGE).returncode == 0
    registry = json.loads((DOUBLES / "data/registry.json").read_text())
    registry[IMAGE] = registry[IMAGE_OLD]  # the tag now points at another image
    host.write("/etc/gpuprov-test-double/registry.json", json.dumps(registry))
    assert host.run("docker", "pull", IMAGE).returncode == 0
    ids = host.run("docker", "image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    assert ids == registry[IMAGE_OLD]["id"]
    assert host.run("docker", "images", "-q").stdout.count("\n") == 2


def test_registry_ids_are_config_hashes() -> None:
    registry = json.loads((DOUBLES / "data/registry.json").read_text())
    for ref, entry in registry.items():
        if not ref.startswith("_"):
            assert entry["id"] == image_id(entry["variant"]), ref


def test_docker_load_archive(host: Host) -> None:
    host.daemon()
    archive = host.path("/tmp/image.tar")  # absolute -i paths are on the (simulated) host
    archive.parent.mkdir()
    loaded_id = make_image_archive(archive, [IMAGE])
    registry = json.loads((DOUBLES / "data/registry.json").read_text())
    assert loaded_id == registry[IMAGE]["id"]
    result = host.run("docker", "load", "-i", "/tmp/image.tar")
    assert (result.returncode, result.stdout) == (0, f"Loaded image: {IMAGE}\n")
    record = json.loads(host.run("docker", "image", "inspect", IMAGE).stdout)[0]
    assert record["Id"] == loaded_id and record["RepoDigests"] == []
    piped = host.run("docker", "load", stdin=archive.read_bytes())
    assert piped.stdout == f"Loaded image: {IMAGE}\n"


def test_docker_run_gpus_needs_runtime_and_toolkit(host: Host) -> None:
    host.driver("580.95.05", "580.95.05")
    host.daemon()
    host.write("/etc/docker/daemon.json", '{"runtimes": {"nvidia": {"path": "x"}}}')
    result = host.run("docker", "run", "--rm", "--gpus", "all", IMAGE, "nvidia-smi")
    assert result.returncode == 125
    assert result.stderr.endswith('docker: Error response from daemon: could not select device '
                                  'driver "" with capabilities: [[gpu]].\n')
    assert "nvidia" not in host.run("docker", "info", "--format", "{{json .Runtimes}}").stdout


def test_docker_run_gpu_container(gpu_host: Host) -> None:
    smi = gpu_host.run("docker", "run", "--rm", "--gpus", '"device=1"', IMAGE, "nvidia-smi", "-L")
    assert smi.returncode == 0, smi.stderr
    assert smi.stdout == ("GPU 1: NVIDIA A100-SXM4-80GB "
                          "(UUID: GPU-9b2c7d40-3e15-4f0a-8d7c-1a2b3c4d5e02)\n")
    assert "Unable to find image" in smi.stderr  # pulled on first use
    code = ("import torch; a = torch.ones(2, 3, device='cuda'); "
            "print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), "
            "torch.cuda.device_count(), torch.cuda.get_device_name(0), (a @ torch.ones(3, 4, "
            "device='cuda')).sum().item(), torch.backends.cudnn.version())")
    torch_all = gpu_host.run("docker", "run", "--rm", "--gpus", "all", IMAGE, "python", "-c", code)
    assert torch_all.stdout == "2.9.0+cu128 12.8 True 2 NVIDIA A100-SXM4-80GB 24.0 91002\n"
    no_gpu = gpu_host.run("docker", "run", "--rm", IMAGE, "nvidia-smi")
    assert no_gpu.returncode == 127
    assert 'exec: "nvidia-smi": executable file not found in $PATH' in no_gpu.stderr
    cpu = gpu_host.run("docker", "run", "--rm", IMAGE, "python3", "-c",
                       "import torch; print(torch.cuda.is_available())")
    assert cpu.stdout == "False\n"


def test_torch_needs_branch_525(gpu_host: Host) -> None:
    gpu_host.driver("470.256.02", "470.256.02")
    out = gpu_host.run("docker", "run", "--rm", "--gpus", "all", IMAGE, "python", "-c",
                       "import torch; print(torch.cuda.is_available())")
    assert out.stdout == "False\n"
    gpu_host.driver("580.95.05", None)
    no_driver = gpu_host.run("docker", "run", "--rm", "--gpus", "all", IMAGE, "true")
    assert no_driver.returncode == 125 and "driver not loaded" in no_driver.stderr


def test_docker_detached_container_lifecycle(gpu_host: Host) -> None:
    run = gpu_host.run("docker", "run", "-d", "--name", "jupyter", "-p", "127.0.0.1:8888:8888",
                       "-v", "/srv/work:/workspace", "--restart", "unless-stopped", "--user",
                       "1000:1000", "--security-opt", "no-new-privileges", "--gpus", "all", IMAGE)
    assert run.returncode == 0 and len(run.stdout.strip()) == 64
    ps = [json.loads(line) for line in gpu_host.run(
        "docker", "ps", "--format", "{{json .}}").stdout.splitlines()]
    assert [(p["Names"], p["State"]) for p in ps] == [("jupyter", "running")]
    info = json.loads(gpu_host.run("docker", "inspect", "jupyter").stdout)[0]
    assert info["HostConfig"]["PortBindings"] == {
        "8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8888"}]}
    assert info["HostConfig"]["Binds"] == ["/srv/work:/workspace"]
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "unless-stopped",
                                                   "MaximumRetryCount": 0}
    assert info["HostConfig"]["DeviceRequests"][0]["Count"] == -1
    assert info["Config"]["User"] == "1000:1000"
    clash = gpu_host.run("docker", "run", "-d", "--name", "jupyter", IMAGE)
    assert clash.returncode == 125 and "is already in use" in clash.stderr
    assert gpu_host.run("docker", "rm", "jupyter").returncode == 1
    assert gpu_host.run("docker", "stop", "jupyter").stdout == "jupyter\n"
    assert gpu_host.run("docker", "ps", "-q").stdout == ""
    assert gpu_host.run("docker", "rm", "jupyter").returncode == 0
    assert gpu_host.run("docker", "ps", "-a", "-q").stdout == ""


def test_docker_info_reports_effective_runtimes(gpu_host: Host) -> None:
    out = gpu_host.run("docker", "info", "--format", "{{json .}}")
    info = json.loads(out.stdout)
    assert info["Runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert info["DefaultRuntime"] == "runc" and info["ServerVersion"] == "28.2.2"


def test_docker_run_records_labels_like_docker(gpu_host: Host) -> None:
    gpu_host.run("docker", "pull", IMAGE)
    run = gpu_host.run("docker", "run", "-d", "--name", "lab", "--label", "gpuprov.spec=abc",
                       "-l", "team=vision", "--label", "bare", IMAGE)
    assert run.returncode == 0, run.stderr
    labels = gpu_host.run("docker", "inspect", "--type=container", "--format",
                          "{{json .Config.Labels}}", "lab")
    shown = json.loads(labels.stdout)
    assert {k: shown[k] for k in ("gpuprov.spec", "team", "bare")} == {
        "gpuprov.spec": "abc", "team": "vision", "bare": ""}
    assert "org.opencontainers.image.description" in shown, "the image's own labels stay"
    spec = gpu_host.run("docker", "inspect", "--format",
                        '{{.State.Running}} {{index .Config.Labels "gpuprov.spec"}}', "lab")
    assert spec.stdout == "true abc\n"


def test_docker_inspect_answers_images_and_containers_in_one_call(gpu_host: Host) -> None:
    """Like the real CLI: one template for every object, each found object printed in
    the order asked, then one error line per name not found, and exit status 1."""
    gpu_host.run("docker", "pull", IMAGE)
    gpu_host.run("docker", "run", "-d", "--name", "lab", "-p", "127.0.0.1:8888:8888",
                 "-e", "TOKEN=s3cret", "--label", "gpuprov.spec=abc", IMAGE)
    fmt = ('{{index $ "Id"}} {{with index $ "State"}}{{index . "Status"}}{{else}}image'
           '{{end}} {{json (index $ "RepoTags")}}')
    out = gpu_host.run("docker", "inspect", "--format", fmt, "--", "nope", IMAGE, "lab", "gone")
    assert out.returncode == 1
    image_line, container_line = out.stdout.splitlines()
    image = json.loads(gpu_host.run("docker", "image", "inspect", IMAGE).stdout)[0]
    assert image_line == f"{image['Id']} image [\"{IMAGE}\"]"
    assert container_line.endswith(" running null"), "a key the object lacks: index gives nil"
    assert out.stderr == "Error: No such object: nope\nError: No such object: gone\n"
    # `.Key` of a missing key is an error for that object only (missingkey=error)
    bad = gpu_host.run("docker", "inspect", "--format", "{{.State.Status}}", "lab", IMAGE)
    assert (bad.returncode, bad.stdout) == (1, "running\n")
    assert bad.stderr.startswith("template parsing error: ")
    # nothing found: the template's output is one empty line
    none = gpu_host.run("docker", "inspect", "--format", "{{.Id}}", "nope")
    assert (none.returncode, none.stdout) == (1, "\n")
    typed = gpu_host.run("docker", "inspect", "--type=container", "--format", "{{.Id}}", IMAGE)
    assert typed.stderr == f"Error response from daemon: No such container: {IMAGE}\n"


def test_docker_facts_share_one_inspect_on_the_double(gpu_host: Host) -> None:
    """DockerImage and ContainerState gathered together: one docker call, each its answer,
    never the container's environment."""
    from gpuprov.facts.base import gather_script, parse_batch
    from gpuprov.facts.docker import ContainerState, DockerImage

    gpu_host.run("docker", "pull", IMAGE)
    gpu_host.run("docker", "run", "-d", "--name", "lab", "-p", "127.0.0.1:8888:8888",
                 "-e", "TOKEN=s3cret", "--label", "gpuprov.spec=abc", IMAGE)
    calls = gpu_host.path("/var/lib/gpuprov-test-double/docker/calls.log")
    before = len(calls.read_text().splitlines())
    facts = [DockerImage(IMAGE), ContainerState("lab"), ContainerState("gone"),
             DockerImage(IMAGE_OLD)]
    script, marker = gather_script(facts)
    bin_dir = gpu_host.path("/bin-shims")
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!/bin/sh\nexec {sys.executable} {DOUBLES}/bin/docker "
                                    "\"$@\"\n")
    (bin_dir / "docker").chmod(0o755)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                         env=gpu_host.env(PATH=f"{bin_dir}:/usr/bin:/bin"))
    assert "s3cret" not in out.stdout
    got = parse_batch(facts, out.stdout, marker)
    assert got[facts[0]].image.repo_tags == (IMAGE,)
    lab = got[facts[1]].container
    assert lab.running and lab.label("gpuprov.spec") == "abc"
    assert lab.ports == {"127.0.0.1:8888->8888/tcp"}
    assert got[facts[2]].docker == "ok" and got[facts[2]].container is None
    assert got[facts[3]].docker == "ok" and got[facts[3]].image is None
    assert len(calls.read_text().splitlines()) == before + 1
