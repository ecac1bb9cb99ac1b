"""Role gpu_exporter against canned facts, per distro and init: off by default
(and then removing what it installed), the program and the systemd timer or
the sysvinit daemon with the exact commands, no change on a converged host,
drift (a stopped timer, an edited program), refusals of bad variables, the
handlers, and its place in the bundled site.yml."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.engine.context import RoleFailed
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.facts.services import ServiceInfo, ServiceState
from gpuprov.facts.system import ShellTest
from gpuprov.model.playbook import load_playbook
from tests.unit.role_facts import commands, service_info, write_cmd
from tests.unit.role_harness import RolePlan, plan_role, system_for
from tests.unit.test_role_jupyter import a_file, directory, written

NAME = "gpuprov-gpu-exporter"
TIMER = f"{NAME}.timer"
PROGRAM = f"/usr/local/sbin/{NAME}"
SERVICE_UNIT = f"/etc/systemd/system/{NAME}.service"
TIMER_UNIT = f"/etc/systemd/system/{TIMER}"
INIT = f"/etc/init.d/{NAME}"
DIR = "/var/lib/prometheus/node-exporter"
PROM = f"{DIR}/gpu_exporter.prom"

DIR_F = FileState(DIR, content=False)
FILES = {p: FileState(p) for p in (PROGRAM, SERVICE_UNIT, TIMER_UNIT, INIT, PROM)}
RC_LINKS = ShellTest(f"ls /etc/rc[0-6S].d/[SK][0-9][0-9]{NAME}")

# (distro, init): systemd everywhere it is PID 1; Debian 12 also as the fleet runs it
HOSTS = [("ubuntu2204", "systemd"), ("ubuntu2404", "systemd"), ("debian12", "systemd"),
         ("debian12", "sysvinit"), ("rhel9", "systemd")]
ON = {"gpu_exporter_enabled": True}
REPO = Path(__file__).resolve().parents[2]


def run(facts: dict, distro: str = "ubuntu2404", init: str = "systemd", *,
        handler: str | None = None, **vars: object) -> RolePlan:
    return plan_role("gpu_exporter", system_for(distro, init=init), facts, vars=vars,
                     handler=handler)


def service_fact(init: str) -> ServiceState:
    return ServiceState(TIMER if init == "systemd" else NAME)


def missing(init: str) -> ServiceInfo:
    if init == "systemd":
        return service_info(TIMER, exists=False)
    return ServiceInfo(NAME, "sysvinit", False, False, None)


def running(init: str, up: bool = True) -> ServiceInfo:
    if init == "systemd":
        return service_info(TIMER, running=up)
    links = (f"/etc/rc2.d/S01{NAME}", f"/etc/rc0.d/K01{NAME}")
    return ServiceInfo(NAME, "sysvinit", True, up, True, status_code=0 if up else 3,
                       links=links)


def fresh(init: str = "systemd") -> dict:
    return {DIR_F: None, **dict.fromkeys(FILES.values()), service_fact(init): missing(init),
            RC_LINKS: False}


def converged(distro: str = "ubuntu2404", init: str = "systemd", **vars: object) -> dict:
    """The host after the fresh plan was applied: every file as it writes it."""
    plan = run(fresh(init), distro, init, **ON, **vars)
    facts = fresh(init)
    facts[DIR_F] = directory()
    facts[FILES[PROGRAM]] = a_file(written(plan, PROGRAM), "0755")
    if init == "systemd":
        for unit in (SERVICE_UNIT, TIMER_UNIT):
            facts[FILES[unit]] = a_file(written(plan, unit))
    else:
        facts[FILES[INIT]] = a_file(written(plan, INIT), "0755")
    facts[service_fact(init)] = running(init)
    return facts


# ---------------------------------------------------------------- enabled

@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_fresh_host_gets_directory_program_and_timer_or_daemon(distro: str, init: str) -> None:
    plan = run(fresh(init), distro, init, **ON)
    cmds = commands(plan)
    assert plan.changed()[0] == f"directory {DIR}"
    assert f"chown -h root:root -- {DIR}" in cmds[0] and f"chmod 0755 -- {DIR}" in cmds[0]
    if init == "systemd":
        assert cmds[1:] == [write_cmd(PROGRAM, mode="0755"), write_cmd(SERVICE_UNIT),
                            write_cmd(TIMER_UNIT), f"systemctl enable {TIMER}",
                            f"systemctl start {TIMER}"]
    else:
        assert cmds[1:] == [write_cmd(PROGRAM, mode="0755"), write_cmd(INIT, mode="0755"),
                            f"update-rc.d {NAME} defaults", f"service {NAME} start"]
    files = [c for c in plan.changes if c.resource.startswith("file ")]
    assert all(c.notify == ("restart gpu exporter",) for c in files)


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_converged_host_has_no_change(distro: str, init: str) -> None:
    assert run(converged(distro, init), distro, init, **ON).changed() == []


def test_an_existing_textfile_directory_is_left_to_its_owner() -> None:
    facts = converged()
    facts[DIR_F] = FileInfo("directory", "prometheus", "prometheus", "0775", 4096, 110, 110)
    plan = run(facts, **ON)
    assert plan.changed() == [] and f"directory {DIR}" not in plan.labels


def test_program_queries_nvidia_smi_and_writes_into_the_textfile_directory() -> None:
    facts = {**fresh(), FileState("/srv/metrics dir", content=False): None}
    plan = run(facts, **ON, gpu_exporter_textfile_dir="/srv/metrics dir")
    program = written(plan, PROGRAM).decode()
    assert program.startswith("#!/bin/sh\n")
    assert "DIR='/srv/metrics dir'\n" in program   # quoted for the shell once
    assert 'OUT="$DIR/gpu_exporter.prom"' in program
    assert "--query-gpu=\"$QUERY\" --format=csv,noheader,nounits" in program
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                 "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
                 "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "gpu_exporter_last_success_timestamp_seconds"):
        assert f'"{name}"' in program or f" {name}" in program
    assert "{% " not in program and "{{ " not in program   # no Jinja left over


def test_timer_runs_the_service_every_interval_and_starts_at_boot() -> None:
    plan = run(fresh(), **ON, gpu_exporter_interval=7)
    timer = written(plan, TIMER_UNIT).decode()
    assert "OnUnitActiveSec=7s\n" in timer and "OnActiveSec=1s\n" in timer
    assert "AccuracySec=1s\n" in timer   # systemd's default 1 min would stretch 7 s
    assert timer.endswith("[Install]\nWantedBy=timers.target\n")
    unit = written(plan, SERVICE_UNIT).decode()
    assert "Type=oneshot\n" in unit and f"ExecStart={PROGRAM} once\n" in unit
    assert "[Install]" not in unit   # started by the timer only


def test_init_script_runs_the_loop_with_a_pidfile_and_starts_at_boot() -> None:
    plan = run(fresh("sysvinit"), "debian12", "sysvinit", **ON, gpu_exporter_interval=7)
    script = written(plan, INIT).decode()
    assert script.startswith("#!/bin/sh\n### BEGIN INIT INFO\n")
    assert f"# Provides:          {NAME}\n" in script
    assert "# Default-Start:     2 3 4 5\n" in script
    assert f"PROGRAM={PROGRAM}\n" in script and "INTERVAL=7\n" in script
    assert 'setsid "$PROGRAM" loop "$INTERVAL"' in script
    assert "PIDFILE=/run/$NAME.pid\n" in script
    for verb in ("start)", "stop)", "status)", "restart|force-reload)"):
        assert verb in script


@pytest.mark.parametrize("init", ["systemd", "sysvinit"])
def test_a_stopped_timer_or_daemon_is_started_again(init: str) -> None:
    distro = "debian12"
    facts = converged(distro, init)
    facts[service_fact(init)] = running(init, up=False)
    verb = f"systemctl start {TIMER}" if init == "systemd" else f"service {NAME} start"
    assert commands(run(facts, distro, init, **ON)) == [verb]


def test_an_edited_program_is_written_back_and_restarts_the_exporter() -> None:
    facts = converged()
    facts[FILES[PROGRAM]] = a_file(b"#!/bin/sh\necho hacked\n", "0755")
    plan = run(facts, **ON)
    assert plan.changed() == [f"file {PROGRAM}"]
    assert plan.changes[0].notify == ("restart gpu exporter",)


def test_a_new_interval_rewrites_the_timer() -> None:
    plan = run(converged(), **ON, gpu_exporter_interval=30)
    assert plan.changed() == [f"file {TIMER_UNIT}"]


@pytest.mark.parametrize(("name", "value"), [
    ("gpu_exporter_interval", 0), ("gpu_exporter_interval", "fast"),
    ("gpu_exporter_interval", "-5"), ("gpu_exporter_enabled", "maybe"),
    ("gpu_exporter_interval", True), ("gpu_exporter_interval", 2.5),
    ("gpu_exporter_textfile_dir", "var/lib/node-exporter"),
    ("gpu_exporter_textfile_dir", "/"), ("gpu_exporter_textfile_dir", "/var/lib/../tmp"),
    ("gpu_exporter_textfile_dir", "/var/lib/x/"),
])
def test_bad_variables_are_refused_naming_them(name: str, value: object) -> None:
    with pytest.raises(RoleFailed) as err:
        run(fresh(), **{**ON, name: value})
    assert name in str(err.value)


# ---------------------------------------------------------------- disabled

@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_off_by_default_a_clean_host_has_no_change(distro: str, init: str) -> None:
    plan = run(fresh(init), distro, init)
    assert plan.changed() == []
    assert not any(label.startswith("directory") for label in plan.labels)


@pytest.mark.parametrize("init", ["systemd", "sysvinit"])
def test_disabled_stops_it_and_removes_program_units_and_metrics(init: str) -> None:
    facts = converged("debian12", init)
    facts[FILES[PROM]] = a_file(b"gpu_exporter_up 1\n")
    facts[RC_LINKS] = True
    plan = run(facts, "debian12", init, gpu_exporter_enabled=False)
    cmds = commands(plan)
    if init == "systemd":
        assert cmds[:2] == [f"systemctl disable {TIMER}", f"systemctl stop {TIMER}"]
        removed = [TIMER_UNIT, SERVICE_UNIT, PROGRAM, PROM]
    else:
        assert cmds[:1] == [f"service {NAME} stop"]
        assert f"update-rc.d {NAME} remove" in cmds
        removed = [INIT, PROGRAM, PROM]
    deleted = [c.resource for c in plan.changes if c.action == "delete"]
    assert deleted == [f"file {p}" for p in removed]
    # the old metrics go: node_exporter would serve them forever
    assert f"file {PROM}" in deleted


# ---------------------------------------------------------------- handlers

def test_restart_handler_reloads_systemd_then_restarts_the_timer() -> None:
    facts = {service_fact("systemd"): running("systemd")}
    plan = run(facts, handler="restart gpu exporter", **ON)
    assert commands(plan) == ["systemctl daemon-reload", f"systemctl restart {TIMER}"]


def test_restart_handler_restarts_the_sysvinit_daemon() -> None:
    facts = {service_fact("sysvinit"): running("sysvinit")}
    plan = run(facts, "debian12", "sysvinit", handler="restart gpu exporter", **ON)
    assert commands(plan) == [f"service {NAME} restart"]


def test_restart_handler_does_nothing_once_disabled() -> None:
    assert run({}, handler="restart gpu exporter").ops == []


# ---------------------------------------------------------------- site.yml

def test_site_yml_runs_it_in_its_own_last_play_off_by_default() -> None:
    plays = load_playbook(REPO / "playbooks" / "site.yml")
    last = plays[-1]
    assert [r.name for r in last.roles] == ["gpu_exporter"]
    assert plays[-2].roles[-1].name == "verify"   # after verify: no verify run for it alone
    defaults = (REPO / "roles" / "gpu_exporter" / "defaults.yml").read_text()
    assert "\ngpu_exporter_enabled: false\n" in defaults
    assert "\ngpu_exporter_interval: 15\n" in defaults
    assert '\ngpu_exporter_textfile_dir: "/var/lib/prometheus/node-exporter"\n' in defaults


def test_extra_vars_strings_are_read_as_ansible_gives_them() -> None:
    # -e gpu_exporter_enabled=true gpu_exporter_interval=30: strings
    plan = run(converged(), gpu_exporter_enabled="true", gpu_exporter_interval="30")
    assert plan.changed() == [f"file {TIMER_UNIT}"]
    assert "OnUnitActiveSec=30s\n" in written(plan, TIMER_UNIT).decode()
    off = run(converged(), gpu_exporter_enabled="false")
    assert f"service {TIMER}" in off.changed()
