"""GPU telemetry and host health facts (`gpuprov status`): nvidia-smi's
query output as real boards print it ([N/A] on a GeForce, the throttle
bitmask, a driver without clocks_event_reasons), the compute processes with
their users and containers, uptime/load, the last-apply record, the HTTP
probe (run for real against a loopback server) and a script's declared value."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuprov.facts.base import FactError
from gpuprov.facts.health import HostLoad, HttpProbe, HttpStatus, LastApply, ScriptVariable
from gpuprov.facts.telemetry import (
    GpuProcess,
    GpuProcesses,
    GpuTelemetry,
    flag,
    number,
    throttle_reasons,
)

A100 = "GPU-5d3f8a1e-0c6b-4a47-9a7e-6b1f6f6e0a01"
RTX = "GPU-2c1b9f7e-55aa-4d1e-b2a3-0f9e8d7c6b5a"


def smi(rows: str, code: int = 0, remapped: str = "", cuda: str = "12.2") -> str:
    return (f"{rows}\n@@gpuprov-smi-end {code}\n@@gpuprov-smi-rows\n{remapped}"
            f"@@gpuprov-smi-banner\nCUDA Version: {cuda}\n")


def test_an_a100_at_work_with_every_field() -> None:
    out = smi(f"0, NVIDIA A100-SXM4-80GB, {A100}, 00000000:07:00.0, 535.104.05, 98, 40536, "
              "81920, 67, 312.45, 400.00, 0, No, 0x0000000000000000",
              remapped=f"{A100}, 0\n")
    report = GpuTelemetry().process(out, 0)
    assert (report.driver_version, report.cuda_version, report.reason) == \
        ("535.104.05", "12.2", None)
    (gpu,) = report.gpus
    assert (gpu.index, gpu.name, gpu.uuid, gpu.pci_bus_id) == \
        (0, "NVIDIA A100-SXM4-80GB", A100, "00000000:07:00.0")
    assert (gpu.utilization_gpu_pct, gpu.memory_used_mib, gpu.memory_total_mib,
            gpu.temperature_c, gpu.power_draw_w, gpu.power_limit_w) == \
        (98.0, 40536.0, 81920.0, 67.0, 312.45, 400.0)
    assert (gpu.ecc_volatile_uncorrected, gpu.retired_pages_pending,
            gpu.remapped_rows_pending, gpu.throttle_reasons) == (0, False, False, ())


def test_a_geforce_says_na_where_it_has_no_ecc_and_no_row_remapping() -> None:
    out = smi(f"0, NVIDIA GeForce RTX 4090, {RTX}, 00000000:01:00.0, 550.54.14, 3, 512, "
              "24564, 41, [N/A], 450.00, [N/A], [N/A], 0x0000000000000001",
              remapped=f"{RTX}, [N/A]\n", cuda="12.4")
    (gpu,) = GpuTelemetry().process(out, 0).gpus
    assert (gpu.power_draw_w, gpu.ecc_volatile_uncorrected, gpu.retired_pages_pending,
            gpu.remapped_rows_pending) == (None, None, None, None)
    assert gpu.throttle_reasons == ()   # idle is not throttling


def test_a_hot_gpu_with_ecc_errors_and_pending_pages() -> None:
    out = smi(f"0, NVIDIA H100 80GB HBM3, {A100}, 00000000:18:00.0, 580.95.05, 100, 80000, "
              "81559, 91, 699.10, 700.00, 2, Yes, 0x0000000000000044",
              remapped=f"{A100}, Yes\n")
    (gpu,) = GpuTelemetry().process(out, 0).gpus
    assert (gpu.temperature_c, gpu.ecc_volatile_uncorrected, gpu.retired_pages_pending,
            gpu.remapped_rows_pending) == (91.0, 2, True, True)
    assert gpu.throttle_reasons == ("sw_power_cap", "hw_thermal_slowdown")


@pytest.mark.parametrize(("output", "reason"), [
    ("no-smi\n", "nvidia-smi is not installed"),
    (smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
         "Make sure that the latest NVIDIA driver is installed and running.", 9),
     "the NVIDIA driver is not loaded (nvidia-smi cannot talk to it)"),
    (smi("Failed to initialize NVML: Driver/library version mismatch", 18),
     "Failed to initialize NVML: Driver/library version mismatch"),
    (smi("No devices were found", 6), "No devices were found"),
])
def test_no_gpus_and_why(output: str, reason: str) -> None:
    report = GpuTelemetry().process(output, 0)
    assert (report.gpus, report.reason, report.driver_version) == ((), reason, None)


def test_cells() -> None:
    assert [number(c) for c in (" 12.5", "[N/A]", "[Not Supported]", "N/A")] == \
        [12.5, None, None, None]
    assert [flag(c) for c in ("Yes", "No", "1", "0", "[N/A]")] == [True, False, True, False, None]
    assert throttle_reasons("0x00000000000000A8") == \
        ("hw_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown")
    assert throttle_reasons("[Not Supported]") == ()


def _fake_smi(tmp_path: Path, body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n" + body)
    (bin_dir / "nvidia-smi").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_a_driver_without_clocks_event_reasons_is_asked_the_old_name(tmp_path: Path) -> None:
    # R470 knows only clocks_throttle_reasons.active; asking the new name fails the query
    env = _fake_smi(tmp_path, """\
case "$*" in
  *clocks_event_reasons*) echo 'Field "clocks_event_reasons.active" is not a valid field to query.'
                          exit 2 ;;
  *--query-gpu*) echo "0, Tesla T4, GPU-t4, 00000000:00:1E.0, 470.256.02, 0, 0, 15360, 35, 9.80, \
70.00, 0, No, 0x0000000000000020" ;;
  *--query-remapped-rows*) echo 'Field "remapped_rows.pending" is not a valid field to query.'
                           exit 2 ;;
  *) echo "| NVIDIA-SMI 470.256.02   Driver Version: 470.256.02   CUDA Version: 11.4     |" ;;
esac
""")
    run = subprocess.run(["sh", "-c", GpuTelemetry().command().shell()], env=env,
                         capture_output=True, text=True, check=False)
    report = GpuTelemetry().process(run.stdout, run.returncode)
    (gpu,) = report.gpus
    assert (report.driver_version, report.cuda_version) == ("470.256.02", "11.4")
    assert gpu.throttle_reasons == ("sw_thermal_slowdown",)
    assert gpu.remapped_rows_pending is None


def test_no_nvidia_smi_on_the_path(tmp_path: Path) -> None:
    run = subprocess.run(["/bin/sh", "-c", GpuTelemetry().command().shell()], capture_output=True,
                         text=True, env={"PATH": str(tmp_path)}, check=False)
    assert GpuTelemetry().process(run.stdout, run.returncode).reason == \
        "nvidia-smi is not installed"


# ---------------------------------------------------------------- processes

CID = "4f1c2d3e" + "a" * 56


def test_processes_with_their_users_and_containers() -> None:
    out = (f"app 4242, 2048, {A100}\n"
           f"app 5151, [N/A], {A100}\n"
           f"app 6161, 512, {RTX}\n"
           "user 4242 alice\nuser 5151 1000\n"
           f"cgroup 5151 {CID}\n"
           f"name {CID} gpuprov-jupyter\n")
    assert GpuProcesses().process(out, 0) == (
        GpuProcess(4242, A100, 2048.0, "alice", None),
        GpuProcess(5151, A100, None, "1000", "gpuprov-jupyter"),
        GpuProcess(6161, RTX, 512.0, None, None))


def test_a_container_docker_does_not_name_keeps_its_short_id() -> None:
    out = f"app 5151, 100, {A100}\nuser 5151 bob\ncgroup 5151 {CID}\n"
    assert GpuProcesses().process(out, 0)[0].container == CID[:12]


def test_no_processes_or_no_nvidia_smi() -> None:
    assert GpuProcesses().process("", 0) == ()
    assert GpuProcesses().process("No running processes found\n", 0) == ()


def test_the_process_probe_reads_users_and_cgroups_on_the_host(tmp_path: Path) -> None:
    me = os.getpid()
    env = _fake_smi(tmp_path, f'echo "{me}, 300, {A100}"\n')
    run = subprocess.run(["sh", "-c", GpuProcesses().command().shell()], env=env,
                         capture_output=True, text=True, check=False)
    (proc,) = GpuProcesses().process(run.stdout, run.returncode)
    assert (proc.pid, proc.used_memory_mib, proc.gpu_uuid) == (me, 300.0, A100)
    assert proc.user   # this test's own user, whatever its name


# ---------------------------------------------------------------- health

def test_uptime_and_load() -> None:
    info = HostLoad().process("350735.47 234388.90\n0.52 0.61 0.70 1/345 6789\n", 0)
    assert (info.uptime_s, info.load) == (350735.47, (0.52, 0.61, 0.70))
    with pytest.raises(FactError):
        HostLoad().process("", 1)


def test_the_last_apply_record() -> None:
    record = {"time": "2026-12-06T20:00:00+00:00", "version": "0.9.0", "gpu_count": 8}
    assert LastApply().process(json.dumps(record), 0) == record
    assert LastApply().process("", 1) is None
    assert LastApply().process("{not json", 0) is None
    assert LastApply().process("[1]", 0) is None


def test_a_script_variable() -> None:
    fact = ScriptVariable("/usr/local/sbin/gpuprov-jupyter", "SPEC")
    assert fact.command().shell() == "sed -n 's/^SPEC=//p' /usr/local/sbin/gpuprov-jupyter"
    assert fact.process("3f2a\n", 0) == "3f2a"
    assert fact.process("'a b'\n", 0) == "a b"
    assert fact.process("", 2) is None
    with pytest.raises(ValueError):
        ScriptVariable("/x", "A;B")


# ---------------------------------------------------------------- http

@pytest.mark.parametrize(("output", "probe"), [
    ("http=403\ncurl=0\n", HttpProbe(403, None)),
    ("http=000\ncurl=7\n", HttpProbe(None, "connection refused")),
    ("http=000\ncurl=28\n", HttpProbe(None, "timed out after 5 s")),
    ("http=302\n", HttpProbe(302, None)),
    ("error=<urlopen error [Errno 111] Connection refused>\n",
     HttpProbe(None, "<urlopen error [Errno 111] Connection refused>")),
    ("HTTP/1.1 200 OK\r\n", HttpProbe(200, None)),
    ("error=no HTTP answer (bash /dev/tcp)\n", HttpProbe(None, "no HTTP answer (bash /dev/tcp)")),
])
def test_http_answers(output: str, probe: HttpProbe) -> None:
    assert HttpStatus("http://127.0.0.1:8888/api/status").process(output, 0) == probe


def test_http_url_is_checked() -> None:
    with pytest.raises(ValueError):
        HttpStatus("http://127.0.0.1:8888/x; rm -rf /")


class _Forbidden(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(403 if self.path == "/api/status" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[int]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _tools(tmp_path: Path, *names: str) -> str:
    """A PATH holding only these tools of this machine (and sh's basics)."""
    bin_dir = tmp_path / "tools"
    bin_dir.mkdir(exist_ok=True)
    for name in (*names, "head", "timeout"):
        if name == "python3":   # this interpreter itself: a pyenv shim needs its own PATH
            (bin_dir / name).symlink_to(Path(sys.executable).resolve())
            continue
        for d in os.environ["PATH"].split(":"):
            if (Path(d) / name).is_file():
                (bin_dir / name).symlink_to(Path(d) / name)
                break
    return str(bin_dir)


@pytest.mark.parametrize("tools", [("curl",), ("python3",), ("bash",)])
def test_the_probe_asks_with_whatever_the_host_has(tmp_path: Path, server: int,
                                                   tools: tuple[str, ...]) -> None:
    path = _tools(tmp_path, *tools)
    if not (Path(path) / tools[0]).exists():
        pytest.skip(f"no {tools[0]} on this machine")
    fact = HttpStatus(f"http://127.0.0.1:{server}/api/status")
    run = subprocess.run(["/bin/sh", "-c", fact.command().shell()], env={"PATH": path},
                         capture_output=True, text=True, timeout=30, check=False)
    assert fact.process(run.stdout, run.returncode) == HttpProbe(403, None), run.stdout


def test_the_probe_says_when_nothing_listens(tmp_path: Path) -> None:
    fact = HttpStatus("http://127.0.0.1:9/api/status")
    run = subprocess.run(["/bin/sh", "-c", fact.command().shell()], capture_output=True,
                         text=True, timeout=30, check=False)
    probe = fact.process(run.stdout, run.returncode)
    assert probe.status is None and probe.detail
