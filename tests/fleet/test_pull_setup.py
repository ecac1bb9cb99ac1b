"""`gpuprov pull-setup` on fleet hosts (Debian 12, sysvinit and systemd), over real SSH:
python3, python3-venv and cron come from the archive (Debian's real .debs,
tests/fleet/realdebs.py), gpuprov is installed into /opt/gpuprov from the
wheels repacked from this suite's own venv, with no package index; then
pull.yml (root 0600, the host's name), the cron entry and cron running, or the
timer enabled and active; a second
run changes nothing; and `gpuprov status` shows the host's last pull once
the installed gpuprov's first `gpuprov pull` (no git server: fetch-failed)
wrote its last.json."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import gpuprov
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet

@pytest.fixture(scope="module")
def sysv_host(fleet: Fleet, systemd_hosts: list[FleetHost]) -> Iterator[FleetHost]:
    """A default (sysvinit) host; it and the systemd host get fresh disks before
    and after: a timer's failed pull (no git server here) leaves systemd
    "degraded", which later tests would inherit."""
    host = [h for h in fleet.hosts if h.variant == "default"][-1]
    with fleet.fresh([host, systemd_hosts[0]]):
        yield host


@pytest.mark.parametrize("init", ["sysvinit", "systemd"])
def test_pull_setup_then_nothing_to_do(fleet: Fleet, sysv_host: FleetHost,
                                       systemd_hosts: list[FleetHost], tmp_path: Path,
                                       init: str) -> None:
    host = sysv_host if init == "sysvinit" else systemd_hosts[0]
    inventory = fleet.inventory([host])
    inventory["all"]["vars"].update({"pull_repo": "git://10.213.0.1/fleet.git",
                                     "pull_interval": 600, "pull_splay": 0})
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))

    first = gpuprov("pull-setup", "inventory.yml", cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    version = fleet.ssh(host, "/opt/gpuprov/bin/gpuprov --version").stdout
    assert re.match(r"gpuprov \S+ \(Python 3\.11\.", version), version
    assert fleet.ssh(host, "sudo stat -c '%U:%G %a' /etc/gpuprov/pull.yml"
                     ).stdout.strip() == "root:root 600"
    config = yaml.safe_load(fleet.ssh(host, "sudo cat /etc/gpuprov/pull.yml").stdout)
    assert config["host"] == host.name and config["repo"] == "git://10.213.0.1/fleet.git"
    assert config["interval"] == 600 and config["splay"] == 0
    if init == "sysvinit":
        cron = fleet.ssh(host, "cat /etc/cron.d/gpuprov-pull").stdout
        assert ("*/10 * * * * root /opt/gpuprov/bin/gpuprov pull >>/var/log/gpuprov-pull.log "
                "2>&1" in cron)
        assert fleet.ssh(host, "pidof cron", check=False).stdout.strip()
    else:
        timer = fleet.ssh(host, "systemctl is-enabled gpuprov-pull.timer; systemctl is-active "
                          "gpuprov-pull.timer; systemctl show -p TimersMonotonic "
                          "gpuprov-pull.timer", check=False).stdout
        assert timer.startswith("enabled\nactive\n"), timer
        assert "OnUnitActiveUSec=10min" in timer, timer
        assert fleet.ssh(host, "test -e /etc/cron.d/gpuprov-pull", check=False).returncode != 0
    # no index was asked: pip had only the copied wheels
    wheels = fleet.ssh(host, "ls /opt/gpuprov/wheels").stdout.split()
    assert any(w.startswith("gpuprov-") for w in wheels) and len(wheels) > 10

    second = gpuprov("pull-setup", "inventory.yml", cwd=tmp_path, timeout=900)
    assert second.returncode == 0, second.stdout[-4000:]
    assert re.search(rf"{re.escape(host.name)}\s+ok=\d+ changed=0 failed=0", second.stdout), \
        second.stdout[-3000:]

    # the installed gpuprov reads the pull.yml the role wrote: its first pull finds no
    # git server there (nothing serves the repo in this test) and records just that
    if init == "systemd":
        # the timer started a first pull at once (OnBootSec is long past): let it end, or
        # ours would find the host busy
        fleet.ssh(host, "for i in $(seq 300); do [ \"$(systemctl show -p ActiveState --value "
                  "gpuprov-pull.service)\" = activating ] || exit 0; sleep 0.1; done; exit 1")
    pulled = fleet.ssh(host, "sudo /opt/gpuprov/bin/gpuprov pull --no-splay", check=False)
    assert pulled.returncode == 2, pulled.stdout + pulled.stderr
    last = json.loads(fleet.ssh(host, "cat /var/lib/gpuprov/pull/last.json").stdout)
    assert last["result"] == "fetch-failed" and last["commit"] is None, last
    status = gpuprov("status", "inventory.yml", "--format", "json", cwd=tmp_path)
    shown = json.loads(status.stdout)["hosts"][host.name]["last_pull"]
    assert shown == {"time": last["time"], "commit": None, "ref": "main", "mode": "apply",
                     "result": "fetch-failed", "message": last["message"],
                     "last_good_time": None, "interval": last["interval"]}
    # never a good pull: the stale-pull rule alerts (exit 5), naming the failure
    assert status.returncode == 5, status.stdout + status.stderr
    alerts = json.loads(status.stdout)["hosts"][host.name]["alerts"]
    assert "health_pull_stale_intervals" in [a["rule"] for a in alerts], alerts
    assert last["message"]
