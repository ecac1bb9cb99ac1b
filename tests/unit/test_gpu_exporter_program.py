"""The gpu_exporter role's program itself (roles/gpu_exporter/templates/
gpuprov-gpu-exporter.sh.j2, rendered by the role as a host gets it), run by a
real /bin/sh and awk here against nvidia-smi stand-ins on PATH: the test
doubles' nvidia-smi (so the double answers the very query the program sends),
a failing one, a missing one, one answering "[N/A]". Its output is parsed with
prometheus_client's parser, as Prometheus would read it through node_exporter.
The sysvinit script's start/status/stop run here too, its pidfile in a temp dir."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuprov.facts.files import FileState
from tests.unit.role_harness import plan_role, system_for
from tests.unit.test_role_gpu_exporter import PROGRAM, fresh
from tests.unit.test_role_jupyter import written

DOUBLES = Path(__file__).resolve().parent.parent / "doubles"
DCGM = ["DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"]
OWN = ["gpu_exporter_up", "gpu_exporter_gpus", "gpu_exporter_last_success_timestamp_seconds"]
UUID0 = "GPU-5d3f8a1e-0c6b-4a47-9a7e-6b1f6f6e0a01"


class Exporter:
    """The rendered program, its textfile directory and a bin/ put first on PATH."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "textfile"
        self.dir.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.root = tmp / "root"   # the doubles' simulated host root
        facts = {**fresh(), FileState(str(self.dir), content=False): None}
        plan = plan_role("gpu_exporter", system_for("debian12"), facts,
                         vars={"gpu_exporter_enabled": True,
                               "gpu_exporter_textfile_dir": str(self.dir)})
        self.program = tmp / "gpuprov-gpu-exporter"
        self.program.write_bytes(written(plan, PROGRAM))
        self.program.chmod(0o755)   # as the role writes it
        self.out = self.dir / "gpu_exporter.prom"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NVIDIA_")}
        env.update(PATH=f"{self.bin}:{env['PATH']}", GPUPROV_TEST_DOUBLE_ROOT=str(self.root))
        return env

    def nvidia_smi(self, script: str) -> None:
        tool = self.bin / "nvidia-smi"
        tool.write_text("#!/bin/sh\n" + script)
        tool.chmod(0o755)

    def double(self, gpus: list[dict] | None = None) -> None:
        """The test doubles' nvidia-smi with driver 580 installed and loaded."""
        for path in ("var/lib/gpuprov-test-double/nvidia/installed-version",
                     "sys/module/nvidia/version"):
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / path).write_text("580.95.05\n")
        if gpus is not None:
            (self.root / "etc/gpuprov-test-double").mkdir(parents=True, exist_ok=True)
            (self.root / "etc/gpuprov-test-double/gpus.json").write_text(json.dumps(gpus))
        self.nvidia_smi(f'exec {sys.executable} {DOUBLES / "bin" / "nvidia-smi"} "$@"\n')

    def once(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(self.program), "once"], env=self.env(),
                              capture_output=True, text=True, timeout=60, check=False)

    def metrics(self) -> dict[str, list]:
        """family name -> its samples, as prometheus_client parses the file."""
        text = self.out.read_text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return {name: f.samples for name, f in families.items()}

    def value(self, name: str) -> float:
        [sample] = self.metrics()[name]
        return float(sample.value)


@pytest.fixture
def exporter(tmp_path: Path) -> Exporter:
    return Exporter(tmp_path)


def test_the_doubles_gpus_as_dcgm_exporter_names_and_labels_them(exporter: Exporter) -> None:
    exporter.double([
        {"name": "NVIDIA A100-SXM4-80GB", "memory_total_mib": 81920, "uuid": UUID0,
         "pci_bus_id": "00000000:07:00.0", "memory_used_mib": 20480, "utilization_gpu": 87,
         "temperature_gpu": 71},
        {"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
         "uuid": "GPU-9b2c7d40-3e15-4f0a-8d7c-1a2b3c4d5e02", "pci_bus_id": "00000000:0B:00.0"},
    ])
    result = exporter.once()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    metrics = exporter.metrics()
    assert list(metrics) == DCGM + OWN
    families = {f.name: f for f in text_string_to_metric_families(exporter.out.read_text())}
    assert families["DCGM_FI_DEV_GPU_UTIL"].type == "gauge"
    assert families["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"].type == "counter"
    assert families["DCGM_FI_DEV_FB_USED"].documentation == "Framebuffer memory used (in MiB)."
    gpu0, gpu1 = metrics["DCGM_FI_DEV_GPU_TEMP"]
    assert gpu0.labels == {"gpu": "0", "UUID": UUID0, "pci_bus_id": "00000000:07:00.0",
                           "device": "nvidia0", "modelName": "NVIDIA A100-SXM4-80GB",
                           "Hostname": os.uname().nodename,
                           "DCGM_FI_DRIVER_VERSION": "580.95.05"}
    assert gpu1.labels["modelName"] == "NVIDIA H100 80GB HBM3" and gpu1.labels["gpu"] == "1"
    by_gpu = {name: [s.value for s in samples] for name, samples in metrics.items()}
    assert by_gpu["DCGM_FI_DEV_GPU_TEMP"] == [71, 32]
    assert by_gpu["DCGM_FI_DEV_GPU_UTIL"] == [87, 0]
    assert by_gpu["DCGM_FI_DEV_FB_USED"] == [20480, 1]
    assert by_gpu["DCGM_FI_DEV_FB_FREE"] == [81920 - 20480, 81559 - 1]
    assert all(50 <= w <= 100 for w in by_gpu["DCGM_FI_DEV_POWER_USAGE"])   # an idle A100
    assert by_gpu["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"] == [0, 0]
    assert exporter.value("gpu_exporter_up") == 1
    assert exporter.value("gpu_exporter_gpus") == 2
    assert abs(exporter.value("gpu_exporter_last_success_timestamp_seconds") - time.time()) < 30


def test_the_file_is_replaced_by_rename_readable_by_node_exporter(exporter: Exporter) -> None:
    exporter.double()
    assert exporter.once().returncode == 0
    keep = exporter.dir.parent / "kept"
    os.link(exporter.out, keep)   # the old inode, as a reader that opened it sees it
    before = keep.read_text()
    assert exporter.once().returncode == 0
    assert keep.read_text() == before   # never rewritten in place
    assert os.stat(exporter.out).st_ino != os.stat(keep).st_ino
    assert stat.S_IMODE(os.stat(exporter.out).st_mode) == 0o644
    assert sorted(p.name for p in exporter.dir.iterdir()) == ["gpu_exporter.prom"]


def test_a_failing_nvidia_smi_leaves_no_stale_gpu_value(exporter: Exporter) -> None:
    exporter.double()
    assert exporter.once().returncode == 0
    last = exporter.value("gpu_exporter_last_success_timestamp_seconds")
    (exporter.root / "sys/module/nvidia/version").unlink()   # the driver unloaded
    first = exporter.once()
    assert first.returncode == 0   # the exporter did its job: it says nvidia-smi failed
    assert "nvidia-smi failed: NVIDIA-SMI has failed" in first.stderr
    metrics = exporter.metrics()
    assert list(metrics) == OWN
    assert exporter.value("gpu_exporter_up") == 0
    assert exporter.value("gpu_exporter_gpus") == 0
    # when it last worked stays, for an alert on its age
    assert exporter.value("gpu_exporter_last_success_timestamp_seconds") == last
    again = exporter.once()
    assert again.stderr == ""   # said once per failure, not every interval
    assert exporter.value("gpu_exporter_last_success_timestamp_seconds") == last


def test_no_nvidia_smi_at_all(exporter: Exporter, tmp_path: Path) -> None:
    env = exporter.env()
    env["PATH"] = f"{exporter.bin}:/usr/bin:/bin"
    if any(Path(d, "nvidia-smi").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("this machine has an nvidia-smi")
    result = subprocess.run(["sh", str(exporter.program), "once"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert list(exporter.metrics()) == ["gpu_exporter_up", "gpu_exporter_gpus"]
    assert exporter.value("gpu_exporter_up") == 0


def test_unsupported_fields_give_no_sample_and_odd_names_stay_parseable(
        exporter: Exporter) -> None:
    # what a GeForce answers: no ECC, no power reading; a name with a comma and a quote
    exporter.nvidia_smi(
        'echo "0, GPU-aaaa, 00000000:01:00.0, 550.54.14, 12, 3, 1024, 23000, 45, [N/A], '
        '1800, 9501, [N/A], [Not Supported], NVIDIA GeForce RTX 4090, \\"OC\\""\n')
    assert exporter.once().returncode == 0
    metrics = exporter.metrics()
    # no sample rather than a made-up 0 (the family's HELP and TYPE stay)
    assert metrics["DCGM_FI_DEV_POWER_USAGE"] == []
    assert metrics["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"] == []
    assert metrics["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"] == []
    assert [s.value for s in metrics["DCGM_FI_DEV_MEM_CLOCK"]] == [9501]
    [temp] = metrics["DCGM_FI_DEV_GPU_TEMP"]
    assert temp.value == 45
    assert temp.labels["modelName"] == "NVIDIA GeForce RTX 4090, _OC_"
    assert exporter.value("gpu_exporter_up") == 1


def test_loop_writes_every_interval_and_stops_on_term(exporter: Exporter) -> None:
    exporter.double()
    proc = subprocess.Popen(["sh", str(exporter.program), "loop", "1"], env=exporter.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            if exporter.out.exists():
                seen.add(os.stat(exporter.out).st_ino)
            time.sleep(0.05)
        assert len(seen) >= 3, "the file was not rewritten every second"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert sorted(p.name for p in exporter.dir.iterdir()) == ["gpu_exporter.prom"]


def test_init_script_starts_one_daemon_reports_it_and_stops_it(exporter: Exporter,
                                                               tmp_path: Path) -> None:
    """The sysvinit script's start/status/stop, with its pidfile and log moved
    into tmp_path (nothing of this machine's /run or /var/log is touched)."""
    from tests.unit.test_role_gpu_exporter import INIT
    from tests.unit.test_role_gpu_exporter import fresh as fresh_host

    plan = plan_role("gpu_exporter", system_for("debian12", init="sysvinit"),
                     fresh_host("sysvinit"), vars={"gpu_exporter_enabled": True,
                                                   "gpu_exporter_interval": 1})
    text = written(plan, INIT).decode().replace(
        "PROGRAM=/usr/local/sbin/gpuprov-gpu-exporter", f"PROGRAM={exporter.program}")
    text = text.replace("PIDFILE=/run/$NAME.pid", f"PIDFILE={tmp_path}/daemon.pid")
    text = text.replace("LOG=/var/log/$NAME.log", f"LOG={tmp_path}/daemon.log")
    script = tmp_path / "init"
    script.write_text(text)
    exporter.double()

    def init(verb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(script), verb], env=exporter.env(),
                              capture_output=True, text=True, timeout=30, check=False)

    pidfile = tmp_path / "daemon.pid"
    assert init("status").returncode == 3
    pidfile.write_text(f"{os.getpid()}\n")   # a stale pidfile: a pid that is not the daemon
    assert init("status").returncode == 3
    try:
        assert init("start").returncode == 0
        pid = int(pidfile.read_text())
        assert init("status").returncode == 0
        assert init("start").stdout.strip().endswith("is already running")
        assert int(pidfile.read_text()) == pid   # not a second one
        deadline = time.monotonic() + 10
        while not exporter.out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exporter.value("gpu_exporter_up") == 1
        assert init("stop").returncode == 0
        assert init("status").returncode == 3 and not pidfile.exists()
        with pytest.raises(ProcessLookupError):
            for _ in range(50):   # gone (reaped by whoever adopted it) within moments
                os.kill(pid, 0)
                time.sleep(0.1)
        exporter.program.chmod(0o644)   # a program that cannot run: start fails, says so
        failed = init("start")
        assert failed.returncode == 1 and "did not start" in failed.stderr
        assert not pidfile.exists()
    finally:
        init("stop")
