"""ServiceState under systemd and sysvinit: canned probe outputs, and the
real probe run here (this machine has no systemd: the sysvinit branch)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuprov.facts.base import gather_script, parse_batch
from gpuprov.facts.services import ServiceState

DATA = Path(__file__).parent / "data" / "facts"


def state(name: str, canned: str):
    return ServiceState(name).process((DATA / canned).read_text(), 0)


@pytest.mark.parametrize(("canned", "exists", "running", "enabled"), [
    ("systemctl.docker-running", True, True, True),
    ("systemctl.containerd-stopped-disabled", True, False, False),
    ("systemctl.nvidia-persistenced-static", True, False, None),
    ("systemctl.missing", False, False, None),
    ("sysvinit.docker-running", True, True, True),
    ("sysvinit.docker-disabled", True, False, False),
    ("sysvinit.ssh-stopped-nolinks", True, False, False),
    ("sysvinit.missing", False, False, None),
])
def test_service_states(canned: str, exists: bool, running: bool, enabled: bool | None) -> None:
    info = state("svc", canned)
    assert (info.exists, info.running, info.enabled) == (exists, running, enabled)
    assert info.init == canned.split(".")[0].replace("systemctl", "systemd")


def test_systemd_details() -> None:
    info = state("docker", "systemctl.docker-running")
    assert (info.load_state, info.active_state, info.sub_state, info.unit_file_state) == (
        "loaded", "active", "running", "enabled")
    failed = state("nvidia-persistenced", "systemctl.nvidia-persistenced-static")
    assert failed.active_state == "failed" and not failed.masked
    masked = ServiceState("x").process(
        "init=systemd\nLoadState=masked\nActiveState=inactive\nSubState=dead\n"
        "UnitFileState=masked\nis-enabled=masked\n", 0)
    assert masked.exists and masked.masked and masked.enabled is False


def test_sysvinit_details() -> None:
    info = state("docker", "sysvinit.docker-running")
    assert info.status_code == 0 and "/etc/rc2.d/S01docker" in info.links
    assert state("ssh", "sysvinit.ssh-stopped-nolinks").status_code == 3


def test_command_quotes_the_name() -> None:
    text = ServiceState("my svc;rm").command().shell()
    assert text.startswith("n='my svc;rm'\nif [ -d /run/systemd/system ]; then\n")
    assert "systemctl show --no-pager --property=LoadState,ActiveState,SubState,UnitFileState" \
        in text


def test_probe_runs_here() -> None:
    facts = [ServiceState("no-such-service-xyz"), ServiceState("dbus")]
    script, marker = gather_script(facts)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    got = parse_batch(facts, out, marker)
    missing = got[ServiceState("no-such-service-xyz")]
    assert not missing.exists and not missing.running and missing.enabled is None
    if Path("/run/systemd/system").is_dir():
        assert missing.init == "systemd"
    else:
        assert missing.init == "sysvinit"
        dbus = got[ServiceState("dbus")]
        assert dbus.exists == Path("/etc/init.d/dbus").exists()


def test_sysvinit_without_status_asks_no_init_script() -> None:
    """sysv_status=False: the script's presence and its rc links, never `status`
    (a wrapper's status would start docker once more); running is left unknown."""
    fact = ServiceState("gpuprov-jupyter", sysv_status=False)
    text = fact.command().shell()
    assert " status" not in text and "systemctl show" in text
    info = fact.process("init=sysvinit\nscript=yes\nlink=/etc/rc2.d/S01gpuprov-jupyter\n"
                        "link=/etc/rc0.d/K01gpuprov-jupyter\n", 0)
    assert (info.exists, info.running, info.enabled, info.status_code) == (True, None, True, None)
    missing = fact.process("init=sysvinit\n", 0)
    assert (missing.exists, missing.running, missing.enabled) == (False, None, None)
    # systemd answers without any init script: running is systemd's word
    systemd = fact.process((DATA / "systemctl.docker-running").read_text(), 0)
    assert (systemd.exists, systemd.running, systemd.enabled) == (True, True, True)


def test_sysvinit_without_status_probe_runs_here(tmp_path: Path) -> None:
    if Path("/run/systemd/system").is_dir():
        pytest.skip("this machine runs systemd: the sysvinit branch is not taken")
    facts = [ServiceState("no-such-service-xyz", sysv_status=False)]
    script, marker = gather_script(facts)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    got = parse_batch(facts, out, marker)[facts[0]]
    assert (got.init, got.exists, got.running) == ("sysvinit", False, None)
