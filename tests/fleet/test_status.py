"""`gpuprov status` on the fleet (issue 18's acceptance): after the bundled
site.yml, every host healthy in one round trip, the table and the JSON agree,
the Prometheus text parses; then a GPU made hot, ECC errors, a stopped
Jupyter and a Jupyter whose config was changed to no auth: exit 5 and exactly
those alerts on exactly those hosts; a stopped host: unreachable, exit 4.

The GPUs are the nvidia-smi double's, scripted through its state file. The
docker double runs no process in a container, so what answers on each host's
Jupyter port (127.0.0.1:8888, where status asks) is a stand-in started by this
test: like jupyter_server, it asks for credentials (403 on /api/status)
unless the server config the role rendered turns authentication off (no
password and an empty token), when it answers 200.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.faults import gpuprov
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.site import write_site_inventory

pytestmark = pytest.mark.fleet

SIZE = int(os.environ.get("GPUPROV_FLEET_SIZE", "8"))
GPU_STATE = "/var/lib/gpuprov-test-double/gpu-state.json"
CONFIG = "/etc/gpuprov/jupyter/jupyter_server_config.json"
CONTAINER = "gpuprov-jupyter"
PYTHON = "/usr/libexec/gpuprov-test-doubles/python3"
STANDIN = "/root/jupyter-standin.py"
STANDIN_CODE = f'''
import json, http.server

def no_auth():
    with open({CONFIG!r}) as f:
        config = json.load(f)
    password = config.get("PasswordIdentityProvider", {{}}).get("hashed_password")
    tokens = [config.get(k, {{}}).get("token") for k in
              ("IdentityProvider", "PasswordIdentityProvider", "ServerApp")]
    return not password and "" in tokens

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if no_auth() else 403)
        self.end_headers()
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", 8888), Handler).serve_forever()
'''


def start_standin(host: FleetHost) -> None:
    host.write_file(STANDIN, STANDIN_CODE)
    host.exec(f"setsid {PYTHON} {STANDIN} </dev/null >/dev/null 2>&1 &")
    host.exec("for i in $(seq 50); do bash -c 'exec 3<>/dev/tcp/127.0.0.1/8888' 2>/dev/null "
              "&& exit 0; sleep 0.1; done; exit 1")


@pytest.fixture(scope="module")
def applied(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, list[FleetHost]]:
    hosts = [h for h in fleet.hosts if h.variant == "default"][:max(SIZE, 6)]
    assert len(hosts) >= 6, "needs 6 hosts: GPUPROV_FLEET_SIZE >= 6"
    for host in hosts:
        fleet.reset(host)
    work = tmp_path_factory.mktemp("status")
    write_site_inventory(fleet, hosts, work)
    done = gpuprov("apply", "inventory.yml", cwd=work, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for host in hosts:
        start_standin(host)
    return work, hosts


def status(work: Path, *args: str) -> tuple[int, str, str]:
    proc = gpuprov("status", "inventory.yml", *args, cwd=work)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def alerts_by_host(doc: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alert in doc["alerts"]:
        if alert["severity"] == "alert":
            out.setdefault(alert["host"], []).append(alert["rule"])
    return out


def test_healthy_fleet_one_round_trip_table_json_and_prometheus_agree(
        applied: tuple[Path, list[FleetHost]]) -> None:
    work, hosts = applied
    code, table, _ = status(work)
    json_code, text, err = status(work, "--format", "json", "-v")
    prom_code, prom, _ = status(work, "--format", "prometheus")
    doc = json.loads(text)
    assert (code, json_code, prom_code) == (0, 0, 0), table + json.dumps(doc["alerts"])
    assert doc["status"] == "healthy" and alerts_by_host(doc) == {}
    for host in hosts:
        data = doc["hosts"][host.name]
        assert (data["reachable"], data["round_trips"]) == (True, 1), data
        assert f"{host.name}: 1 round trip" in err.splitlines()
        assert data["services"]["jupyter"]["http_status"] == 403
        assert len(data["gpus"]) >= 1
        # the table's host line says what the JSON says
        assert f"{host.name}  healthy  driver {data['driver_version']}, " \
            f"CUDA {data['cuda_version']}" in table
    s = doc["summary"]
    assert table.rstrip().splitlines()[-1].startswith(
        f"{s['hosts']} hosts: {s['healthy']} healthy, 0 unhealthy, 0 failed, 0 unreachable")
    families = {f.name: f for f in text_string_to_metric_families(prom)}
    temps = {(x.labels["host"], x.labels["gpu"]): x.value
             for x in families["gpuprov_status_gpu_temperature_celsius"].samples}
    assert temps == {(h, str(g["index"])): g["temperature_c"]
                     for h, d in doc["hosts"].items() for g in d["gpus"]}
    assert {x.labels["host"] for x in families["gpuprov_status_host_healthy"].samples
            if x.value == 1} == {h.name for h in hosts}


def test_exactly_the_faults_raise_alerts_and_a_stopped_host_is_unreachable(
        applied: tuple[Path, list[FleetHost]]) -> None:
    work, hosts = applied
    hot, ecc, stopped, open_, gone, healthy = hosts[:6]
    hot.write_file(GPU_STATE, json.dumps({"0": {"temperature.gpu": 91}}))
    ecc.write_file(GPU_STATE, json.dumps({"0": {"ecc.errors.uncorrected.volatile.total": 2}}))
    stopped.exec(f"docker stop {CONTAINER}")
    config = json.loads(open_.read_file(CONFIG) or "{}")
    config.setdefault("IdentityProvider", {})["token"] = ""
    open_.write_file(CONFIG, json.dumps(config))
    try:
        code, text, _ = status(work, "--format", "json")
        doc = json.loads(text)
        assert code == 5, doc["alerts"]
        assert alerts_by_host(doc) == {
            hot.name: ["health_gpu_temperature_max"], ecc.name: ["health_ecc_errors_max"],
            stopped.name: ["health_jupyter"], open_.name: ["health_jupyter"]}
        messages = {a["host"]: a["message"] for a in doc["alerts"] if a["severity"] == "alert"}
        assert messages[hot.name] == (f"{hot.name} GPU 0: temperature 91 C >= 85 C "
                                      "(health_gpu_temperature_max)")
        assert "container stopped" in messages[stopped.name]
        assert "HTTP 200 without credentials" in messages[open_.name]
        code, table, _ = status(work)
        assert code == 5 and f"ALERT {messages[hot.name]}" in table
        assert re.search(r"-> exit 5 \(unhealthy\)$", table.rstrip())

        gone.stop()
        code, text, _ = status(work, "--format", "json", "-l", f"{gone.name}:{healthy.name}")
        doc = json.loads(text)
        assert code == 4, doc
        assert (doc["hosts"][gone.name]["reachable"], doc["hosts"][gone.name]["status"]) == \
            (False, "unreachable")
        assert doc["hosts"][healthy.name]["status"] == "healthy"
    finally:
        for host in (hot, ecc):
            host.exec(f"rm -f {GPU_STATE}")
        if not gone.running:
            gone.start()
