"""The gpu_exporter role over real SSH (issue 18's acceptance for it), on a
systemd host and on a sysvinit host with the stand-in NVIDIA driver: after
apply the textfile appears within one interval, parses with prometheus_client's
parser and carries dcgm-exporter's names; a second apply changes nothing and
drift-check is clean; the timer (systemd) or the daemon (sysvinit) comes back
by itself after a reboot and writes again; a stopped timer or daemon is drift;
gpu_exporter_enabled false removes everything, the metrics file included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.site import site_vars
from tests.fleet.test_engine import gpuprov, report

NAME = "gpuprov-gpu-exporter"
PROM = "/var/lib/prometheus/node-exporter/gpu_exporter.prom"
INTERVAL = 2
# The names dashboards made for dcgm-exporter query.
DCGM = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"}

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def hosts(fleet: Fleet, systemd_hosts: list[FleetHost]):
    with fleet.fresh([systemd_hosts[0],
                      next(h for h in fleet.hosts if h.variant == "default")]) as chosen:
        yield chosen


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, hosts: list[FleetHost], tmp_path_factory: pytest.TempPathFactory
            ) -> Path:
    work = tmp_path_factory.mktemp("gpu-exporter")
    inventory = fleet.inventory(hosts)
    inventory["all"]["vars"].update(site_vars(fleet.repo_url))
    inventory["all"]["vars"].update(gpu_exporter_enabled=True, gpu_exporter_interval=INTERVAL)
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    # the driver (nvidia-smi answers) and the exporter: no image, no Jupyter
    (work / "playbooks").mkdir()
    (work / "playbooks" / "site.yml").write_text(
        "- hosts: all\n  roles: [nouveau, nvidia_driver, gpu_exporter]\n")
    return work


def metrics(host: FleetHost) -> dict[str, list]:
    text = host.read_file(PROM)
    assert text is not None, f"{host.name}: no {PROM}"
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def last_success(host: FleetHost) -> float | None:
    text = host.read_file(PROM)
    if text is None:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "gpu_exporter_last_success_timestamp_seconds":
            return float(family.samples[0].value)
    return None


def host_time(host: FleetHost) -> float:
    return float(host.exec("date +%s").stdout)


def wait_for_write_after(host: FleetHost, since: float, timeout: float) -> float:
    """Seconds until the exporter wrote a success at or after `since` (host clock)."""
    start = time.monotonic()
    while True:
        value = last_success(host)
        if value is not None and value >= since:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, \
            f"{host.name}: no new {PROM} within {timeout} s: {host.read_file(PROM)!r}"
        time.sleep(0.2)


def running(host: FleetHost) -> bool:
    if host.init == "systemd":
        state = host.exec(f"systemctl is-enabled {NAME}.timer; systemctl is-active {NAME}.timer",
                          check=False).stdout.split()
        return state == ["enabled", "active"]
    links = host.exec(f"ls /etc/rc2.d/ | grep -c 'S[0-9][0-9]{NAME}$'", check=False).stdout
    return host.exec(f"service {NAME} status", check=False).returncode == 0 \
        and links.strip() == "1"


@pytest.fixture(scope="module")
def applied(workdir: Path, hosts: list[FleetHost]) -> dict[str, float]:
    """Each host's clock when apply returned."""
    res = gpuprov("apply", "inventory.yml", "--report", "first.json", cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    return {h.name: host_time(h) for h in hosts}


def test_after_apply_the_textfile_appears_within_one_interval_with_dcgm_names(
        applied: dict[str, float], hosts: list[FleetHost]) -> None:
    for host in hosts:
        assert running(host), host.name
        # the first run is due right after the timer or daemon starts, within apply
        waited = wait_for_write_after(host, applied[host.name] - INTERVAL, INTERVAL + 1)
        assert waited <= INTERVAL + 1
        found = metrics(host)
        assert set(found) >= DCGM, (host.name, sorted(found))
        temps = found["DCGM_FI_DEV_GPU_TEMP"]
        assert [s.labels["gpu"] for s in temps] == ["0", "1"]   # the double's two A100s
        labels = temps[0].labels
        assert labels["Hostname"] == host.name
        assert labels["modelName"] == "NVIDIA A100-SXM4-80GB"
        assert labels["UUID"].startswith("GPU-") and labels["pci_bus_id"]
        assert found["gpu_exporter_up"][0].value == 1
        mode = host.exec(f"stat -c %a {PROM}").stdout.strip()
        assert mode == "644"   # node_exporter runs as its own user
        if host.init == "systemd":
            assert host.read_file(f"/etc/init.d/{NAME}") is None


def test_it_keeps_writing_every_interval(applied: dict[str, float],
                                         hosts: list[FleetHost]) -> None:
    for host in hosts:
        now = host_time(host)
        wait_for_write_after(host, now + 1, 2 * INTERVAL + 2)


def test_second_apply_changes_nothing_and_drift_check_is_clean(
        workdir: Path, applied: dict[str, float], hosts: list[FleetHost]) -> None:
    again = gpuprov("apply", "inventory.yml", "--report", "second.json", cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {n: h["changed"] for n, h in report(workdir / "second.json").items()} == \
        {h.name: 0 for h in hosts}
    drift = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr


def test_a_reboot_brings_the_timer_and_the_daemon_back(
        fleet: Fleet, applied: dict[str, float], hosts: list[FleetHost]) -> None:
    for host in hosts:
        before = host.boot_id()
        host.reboot()
        assert host.boot_id() not in (before, None)
        booted = host_time(host)
        assert running(host), f"{host.name}: not running after the reboot"
        wait_for_write_after(host, booted, INTERVAL + 5)


def test_a_stopped_exporter_is_drift_and_apply_starts_it(
        workdir: Path, applied: dict[str, float], hosts: list[FleetHost]) -> None:
    for host in hosts:
        unit = f"{NAME}.timer" if host.init == "systemd" else NAME
        verb = f"systemctl stop {unit}" if host.init == "systemd" else f"service {unit} stop"
        host.exec(verb)
        assert not running(host)
    drift = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert drift.returncode != 0
    for host in hosts:
        assert host.name in drift.stdout and NAME in drift.stdout, drift.stdout
    fixed = gpuprov("apply", "inventory.yml", cwd=workdir)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    for host in hosts:
        assert running(host)
        wait_for_write_after(host, host_time(host), INTERVAL + 2)


def test_disabled_removes_it_and_its_metrics(
        workdir: Path, applied: dict[str, float], hosts: list[FleetHost]) -> None:
    off = gpuprov("apply", "inventory.yml", "-e", "gpu_exporter_enabled=false", cwd=workdir)
    assert off.returncode == 0, off.stdout + off.stderr
    for host in hosts:
        for path in (PROM, f"/usr/local/sbin/{NAME}", f"/etc/init.d/{NAME}",
                     f"/etc/systemd/system/{NAME}.timer", f"/etc/systemd/system/{NAME}.service"):
            assert host.read_file(path) is None, (host.name, path)
        assert not running(host)
        if host.init == "sysvinit":
            assert not host.exec(f"ls /etc/rc?.d | grep {NAME}", check=False).stdout
            assert NAME not in host.exec("ps -eo args").stdout
        time.sleep(INTERVAL + 1)
        assert host.read_file(PROM) is None, "something still writes it"
