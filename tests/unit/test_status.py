"""engine/status.py: `collect_status` in one round trip per host, answered
here by a fake connector with canned outputs of each probe (Ubuntu 22.04 and
24.04 and RHEL 9 under systemd, Debian 12 under sysvinit as on the test
fleet), the data shape S2's `gpuprov status` renders, what the inventory
decides (data_dir, the Jupyter port, Jupyter off), and hosts that cannot be asked."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gpuprov.command import Command
from gpuprov.connectors.base import Become, CommandResult, Connector, Session
from gpuprov.connectors.local import LocalConnector
from gpuprov.engine.connect import ConnectOptions
from gpuprov.engine.executor import RunOptions
from gpuprov.engine.handlers import RebootRequired
from gpuprov.engine.status import (
    StatusCollector,
    _jupyter_role,
    collect_status,
    status_target,
)
from gpuprov.errors import UnreachableHost
from gpuprov.facts.base import Fact, _probes
from gpuprov.facts.docker import ContainerState
from gpuprov.facts.hardware import DiskUsage, Memory
from gpuprov.facts.health import HostLoad, HttpStatus, LastApply, LastPull, ScriptVariable
from gpuprov.facts.services import ServiceState
from gpuprov.facts.system import CommandPath
from gpuprov.facts.telemetry import GpuProcesses, GpuTelemetry
from gpuprov.model.hosts import Host

A100 = ["GPU-5d3f8a1e-0c6b-4a47-9a7e-6b1f6f6e0a01", "GPU-9b2c7d40-3e15-4f0a-8d7c-1a2b3c4d5e02"]
SPEC = "9" * 64
SCRIPT = "/usr/local/sbin/gpuprov-jupyter"
URL = "http://127.0.0.1:8888/api/status"
DATA = "/srv/gpuprov/data"

Answers = dict[Fact[Any], tuple[str, int]]


def smi(temperature: int = 67) -> str:
    rows = "\n".join(
        f"{i}, NVIDIA A100-SXM4-80GB, {uuid}, 00000000:0{7 + 4 * i:X}:00.0, 580.95.05, 98, "
        f"40536, 81920, {temperature if i == 0 else 40}, 312.45, 400.00, 0, No, "
        "0x0000000000000000" for i, uuid in enumerate(A100))
    return (f"{rows}\n@@gpuprov-smi-end 0\n@@gpuprov-smi-rows\n{A100[0]}, 0\n{A100[1]}, 0\n"
            "@@gpuprov-smi-banner\nCUDA Version: 13.0\n")


def systemd(running: bool = True, exists: bool = True) -> str:
    load = "loaded" if exists else "not-found"
    active = "active" if running else "inactive"
    return (f"init=systemd\nLoadState={load}\nActiveState={active}\nSubState=running\n"
            f"UnitFileState=enabled\nis-enabled={'enabled' if exists else ''}\n")


def sysv(running: bool = True, exists: bool = True) -> str:
    if not exists:
        return "init=sysvinit\n"
    return f"init=sysvinit\nstatus={0 if running else 3}\nlink=/etc/rc2.d/S01x\n"


def container(status: str = "running", spec: str = SPEC) -> str:
    return json.dumps({"id": "c" * 64, "tags": None, "digests": None,
                       "state": {"status": status, "running": status == "running"},
                       "labels": {"gpuprov.spec": spec},
                       "ports": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8888"}]}})


def answers(distro: str, **over: tuple[str, int]) -> Answers:
    """Every probe's output on a healthy host of `distro` (ssh's unit name is
    the distro's), with `over` replacing some by the fact's class name."""
    unit = sysv if distro == "debian12" else systemd
    ssh = {"ubuntu2204": ("ssh", "sshd"), "ubuntu2404": ("ssh", "sshd"),
           "debian12": ("ssh",), "rhel9": ("sshd",)}[distro]
    base: Answers = {
        GpuTelemetry(): (smi(), 0),
        GpuProcesses(): (f"app 4242, 2048, {A100[1]}\nuser 4242 alice\n", 0),
        RebootRequired(): ("", 0),
        HostLoad(): ("350735.47 234388.90\n0.52 0.61 0.70 1/345 6789\n", 0),
        Memory(): ("MemTotal:       263921012 kB\nMemAvailable:   250000000 kB\n"
                   "SwapTotal:             0 kB\n", 0),
        LastApply(): (json.dumps({"time": "2026-12-06T20:00:00+00:00", "version": "0.9.0",
                                  "playbook": "site.yml", "gpu_count": 2}), 0),
        # pull mode off: no /var/lib/gpuprov/pull/last.json (cat fails)
        LastPull(): ("", 1),
        ServiceState("ssh"): (unit(exists="ssh" in ssh), 0),
        ServiceState("sshd"): (unit(exists="sshd" in ssh), 0),
        ServiceState("docker"): (unit(), 0),
        ServiceState("containerd"): (unit(), 0),
        DiskUsage((DATA,)): (f"@@gpuprov-df {DATA}\nFilesystem 1024-blocks Used Available "
                             "Capacity Mounted on\n/dev/nvme0n1p2 1920748320 500000000 "
                             "1323000000 28% /\n", 0),
        ContainerState("gpuprov-jupyter"): (container(), 0),
        ScriptVariable(SCRIPT, "SPEC"): (f"{SPEC}\n", 0),
        HttpStatus(URL): ("http=403\ncurl=0\n", 0),
    }
    for key, value in over.items():
        fact = next(f for f in base if type(f).__name__ == key or f.key.startswith(key[:-1]))
        base[fact] = value
    return base


def _text(fact: Fact[Any]) -> str:
    command = fact.command()
    return command.shell() if isinstance(command, Command) else command


class CannedConnector(Connector):
    """Answers a facts script from canned outputs of each probe in it."""

    def __init__(self, host: str, canned: Answers | Exception) -> None:
        super().__init__(host)
        self.canned = canned
        self.scripts: list[tuple[str, bool]] = []
        self.connects = 0
        self.closed = 0

    def connect(self, *, expect_refusal: bool = False) -> None:
        if isinstance(self.canned, Exception):
            raise self.canned
        if not self.connects:
            self.stats.connections += 1
        self.connects += 1

    def run(self, command: Command | str, *, sudo: bool = False, stdin: object = None,
            timeout: float | None = None) -> CommandResult:
        assert isinstance(self.canned, Mapping) and isinstance(stdin, bytes)
        self.stats.round_trips += 1
        script = stdin.decode()
        self.scripts.append((script, sudo))
        marker = re.search(r"'(@@gpuprov-[0-9a-f]+) begin 0'", script)
        assert marker is not None
        asked = sorted((f for f in self.canned if _text(f) in script),
                       key=lambda f: script.index(_text(f)))
        probes = _probes(asked)
        assert len(probes) == script.count(" begin "), "a probe without a canned answer"
        out = ""
        for i, (fact,) in enumerate(probes):
            text, code = self.canned[fact]
            out += f"{marker.group(1)} begin {i}\n{text}\n{marker.group(1)} end {i} {code}\n"
        return CommandResult("sh -s", 0, out, "")

    def session(self) -> Session:
        return Session("admin")

    def close(self) -> None:
        self.closed += 1


def run_status(canned: dict[str, Answers | Exception], host_vars: dict[str, Any] | None = None
               ) -> tuple[dict[str, dict[str, Any]], dict[str, CannedConnector]]:
    hosts = [Host(name, vars=dict(host_vars or {})) for name in canned]
    made: dict[str, CannedConnector] = {}

    def factory(host: Host, options: ConnectOptions) -> Connector:
        made[host.name] = CannedConnector(host.name, canned[host.name])
        return made[host.name]
    return collect_status(hosts, RunOptions(), factory), made


SHAPE = {"host", "reachable", "error", "round_trips", "driver_version", "cuda_version", "gpus",
         "gpu_reason", "host_health", "services", "last_apply", "last_pull", "notes"}
GPU_KEYS = {"index", "name", "uuid", "pci_bus_id", "utilization_gpu_pct", "memory_used_mib",
            "memory_total_mib", "temperature_c", "power_draw_w", "power_limit_w",
            "ecc_volatile_uncorrected", "retired_pages_pending", "remapped_rows_pending",
            "throttle_reasons", "processes"}


@pytest.mark.parametrize("distro", ["ubuntu2204", "ubuntu2404", "debian12", "rhel9"])
def test_a_healthy_host_in_one_round_trip(distro: str) -> None:
    data, made = run_status({"gpu1": answers(distro)})
    status = data["gpu1"]
    assert set(status) == SHAPE
    assert (status["reachable"], status["error"], status["round_trips"]) == (True, None, 1)
    assert made["gpu1"].stats.connections == 1 and made["gpu1"].closed == 1
    assert (status["driver_version"], status["cuda_version"], status["gpu_reason"]) == \
        ("580.95.05", "13.0", None)
    assert [set(g) for g in status["gpus"]] == [GPU_KEYS, GPU_KEYS]
    gpu0, gpu1 = status["gpus"]
    assert (gpu0["index"], gpu0["uuid"], gpu0["pci_bus_id"], gpu0["temperature_c"]) == \
        (0, A100[0], "00000000:07:00.0", 67.0)
    assert (gpu0["throttle_reasons"], gpu0["processes"]) == ([], [])
    assert gpu1["processes"] == [{"pid": 4242, "user": "alice", "container": None,
                                  "used_memory_mib": 2048.0}]
    assert status["host_health"] == {
        "reboot_pending": False, "uptime_s": 350735.47, "load": [0.52, 0.61, 0.70],
        "memory_total_mib": 257735.0, "memory_available_mib": 244140.0,
        "data_dir": DATA, "data_dir_free_mib": 1291992.0}
    assert status["services"] == {
        "sshd": "running", "docker": "running", "containerd": "running",
        "jupyter": {"container": "running", "spec_matches": True, "port": 8888,
                    "http_status": 403, "detail": None}}
    assert status["last_apply"] == {"time": "2026-12-06T20:00:00+00:00", "version": "0.9.0",
                                    "gpu_count": 2}
    assert status["last_pull"] is None   # pull mode off
    json.dumps(data)   # plain JSON data all through


SHA = "3f2a9c1e5b7d4f60a1b2c3d4e5f60718293a4b5c"


def test_the_last_pull_is_read_in_the_same_round_trip() -> None:
    record = {"time": "2026-12-06T21:00:00Z", "commit": SHA, "ref": "main", "mode": "apply",
              "result": "failed", "changed": 0, "drifted": 0, "failed_tasks": 1,
              "message": "base: apt-get install failed", "last_good_commit": None,
              "last_good_time": "2026-12-06T20:00:00Z", "report": None, "duration_s": 3.5,
              "gpuprov_version": "0.1.0", "interval": 900}
    data, made = run_status({"gpu1": answers("debian12", LastPull=(json.dumps(record), 0))})
    assert data["gpu1"]["last_pull"] == {
        "time": "2026-12-06T21:00:00Z", "commit": SHA, "ref": "main", "mode": "apply",
        "result": "failed", "message": "base: apt-get install failed",
        # what the stale-pull rule judges (health_pull_stale_intervals)
        "last_good_time": "2026-12-06T20:00:00Z", "interval": 900}
    ((script, _),) = made["gpu1"].scripts
    assert "cat /var/lib/gpuprov/pull/last.json" in script


@pytest.mark.parametrize("output", ["", "not json", "[1, 2]", '{"commit": "abc"}'])
def test_no_or_an_unreadable_last_pull_is_none(output: str) -> None:
    data, _ = run_status({"gpu1": answers("rhel9", LastPull=(output, 0 if output else 1))})
    assert data["gpu1"]["last_pull"] is None


def test_the_script_needs_sudo_only_for_docker_and_the_init_scripts() -> None:
    _, made = run_status({"gpu1": answers("debian12")})
    ((script, sudo),) = made["gpu1"].scripts
    assert sudo
    assert script.count("nvidia-smi --query-gpu") == 1


def test_trouble_is_reported_as_found() -> None:
    data, _ = run_status({"gpu1": answers(
        "ubuntu2204",
        GpuTelemetry=(smi(temperature=91), 0),
        RebootRequired=("the system says so (/var/run/reboot-required)\n", 0),
        ContainerState=(container("exited", spec="1" * 64), 0),
        HttpStatus=("http=000\ncurl=7\n", 0),
        LastApply=("", 1),
        **{"ServiceState('docker')": (systemd(running=False), 0),
           "ServiceState('containerd')": (systemd(exists=False), 0)})})
    status = data["gpu1"]
    assert status["gpus"][0]["temperature_c"] == 91.0
    assert status["host_health"]["reboot_pending"] is True
    assert (status["services"]["docker"], status["services"]["containerd"]) == \
        ("stopped", "absent")
    assert status["services"]["jupyter"] == {
        "container": "stopped", "spec_matches": False, "port": 8888, "http_status": None,
        "detail": "port 8888: connection refused"}
    assert status["last_apply"] is None


def test_no_gpu_and_no_jupyter_container() -> None:
    data, _ = run_status({"gpu1": answers(
        "rhel9", GpuTelemetry=("no-smi\n", 0), GpuProcesses=("", 0),
        ContainerState=("Error: No such object: gpuprov-jupyter\n", 1),
        ScriptVariable=("", 2), HttpStatus=("http=000\ncurl=7\n", 0))})
    status = data["gpu1"]
    assert (status["gpus"], status["gpu_reason"], status["driver_version"]) == \
        ([], "nvidia-smi is not installed", None)
    assert status["services"]["jupyter"]["container"] == "absent"
    assert status["services"]["jupyter"]["spec_matches"] is None


def test_the_inventory_sets_data_dir_and_the_jupyter_port() -> None:
    role = _jupyter_role()
    assert role is not None
    target = status_target(Host("g", vars={"data_dir": "/data/{{ 'lab' }}", "jupyter_port": 9999,
                                           "jupyter_bind_address": "::1"}), role)
    assert target.data_dir == "/data/lab"
    assert target.jupyter is not None
    assert (target.jupyter.container, target.jupyter.script, target.jupyter.port,
            target.jupyter.url) == ("gpuprov-jupyter", SCRIPT, 9999,
                                    "http://[::1]:9999/api/status")
    tls = status_target(Host("g", vars={"jupyter_bind_address": "0.0.0.0",
                                        "jupyter_tls_cert": "/c", "jupyter_tls_key": "/k"}), role)
    assert tls.jupyter is not None and tls.jupyter.url == "https://127.0.0.1:8888/api/status"


def test_jupyter_off_is_null_and_not_asked() -> None:
    canned = answers("ubuntu2404")
    for fact in list(canned):
        if isinstance(fact, ContainerState | ScriptVariable | HttpStatus):
            del canned[fact]
    data, made = run_status({"gpu1": canned}, {"jupyter_enabled": False})
    assert data["gpu1"]["services"]["jupyter"] is None
    ((script, _),) = made["gpu1"].scripts
    assert "docker inspect" not in script and "curl" not in script


def test_k8s_nodes_say_which_kubernetes_tools_are_missing() -> None:
    """As drift-check does: k8s_node's own check, asked only where the role is on."""
    canned = answers("ubuntu2404")
    canned |= {CommandPath("kubelet"): ("", 1), CommandPath("kubeadm"): ("", 1),
               CommandPath("kubectl"): ("/usr/bin/kubectl\n", 0)}
    data, made = run_status({"node1": canned}, {"k8s_node_enabled": "true"})
    [note] = data["node1"]["notes"]
    assert note.startswith("k8s_node: kubelet, kubeadm not installed: install it with your "
                           "cluster's tooling")
    canned[CommandPath("kubelet")] = canned[CommandPath("kubeadm")] = ("/usr/bin/k\n", 0)
    data, _ = run_status({"node1": canned}, {"k8s_node_enabled": True})
    assert data["node1"]["notes"] == []
    plain = answers("ubuntu2404")
    data, made = run_status({"gpu1": plain})
    assert data["gpu1"]["notes"] == []
    ((script, _),) = made["gpu1"].scripts
    assert "kubelet" not in script


def test_unreachable_and_broken_hosts_keep_the_shape() -> None:
    data, _ = run_status({
        "down": UnreachableHost("down", "refused", "connection refused"),
        "odd": answers("debian12", HostLoad=("", 1)),
        "ok": answers("debian12")})
    assert list(data) == ["down", "odd", "ok"]
    down, odd = data["down"], data["odd"]
    assert set(down) == SHAPE and set(odd) == SHAPE
    assert (down["reachable"], down["round_trips"], down["gpus"], down["host_health"]) == \
        (False, 0, [], None)
    assert "connection refused" in down["error"]
    assert (odd["reachable"], odd["round_trips"], odd["services"]) == (True, 1, None)
    assert "/proc/uptime" in odd["error"]
    assert data["ok"]["error"] is None


def test_watch_reuses_the_connection_and_counts_each_refresh() -> None:
    made: dict[str, CannedConnector] = {}

    def factory(host: Host, options: ConnectOptions) -> Connector:
        made[host.name] = CannedConnector(host.name, answers("ubuntu2204"))
        return made[host.name]
    collector = StatusCollector([Host("gpu1")], RunOptions(), factory)
    try:
        first, second = collector.collect(), collector.collect()
    finally:
        collector.close()
    assert first["gpu1"]["round_trips"] == second["gpu1"]["round_trips"] == 1
    assert (made["gpu1"].stats.connections, made["gpu1"].stats.round_trips) == (1, 2)
    assert made["gpu1"].closed == 1


def test_a_bad_variable_is_that_hosts_error() -> None:
    data, made = run_status({"gpu1": answers("ubuntu2204")}, {"data_dir": "{{ nope }}"})
    assert data["gpu1"]["reachable"] is True and "nope" in data["gpu1"]["error"]
    assert not made   # nothing asked of the host


def test_this_machine_through_the_local_connector_held_in_one_round_trip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a real facts script through a held command (the path SSH hosts take), with
    # the nvidia-smi double on PATH and a GPU of it made hot; read-only here
    root = tmp_path / "root"
    for path, text in (("sys/module/nvidia/version", "580.95.05\n"),
                       ("var/lib/gpuprov-test-double/nvidia/installed-version", "580.95.05\n"),
                       ("var/lib/gpuprov-test-double/gpu-state.json",
                        json.dumps({"1": {"temperature.gpu": 88}}))):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    doubles = Path(__file__).resolve().parent.parent / "doubles"
    (bin_dir / "nvidia-smi").write_text(
        f'#!/bin/sh\nexec {sys.executable} {doubles}/bin/nvidia-smi "$@"\n')
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("GPUPROV_TEST_DOUBLE_ROOT", str(root))
    host = Host("here", vars={"ansible_connection": "local", "become": False,
                              "jupyter_enabled": False, "data_dir": str(tmp_path)})
    made: list[LocalConnector] = []

    def factory(h: Host, options: ConnectOptions) -> Connector:
        made.append(LocalConnector(h.name, Become(enabled=False)))
        return made[0]
    status = collect_status([host], RunOptions(), factory)["here"]
    assert (status["error"], status["round_trips"]) == (None, 1), status
    assert [g["temperature_c"] for g in status["gpus"]] == [32.0, 88.0]
    assert status["host_health"]["data_dir_free_mib"] > 0
    assert status["services"]["jupyter"] is None
