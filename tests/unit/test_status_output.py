"""`gpuprov status` output: the table, JSON and Prometheus of the same data
say the same states, alerts and exit code; what a host did not answer is
shown as unknown, never as a value."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gpuprov.cli.exit_codes import status_outcome
from gpuprov.engine.health import HealthRules, host_alerts
from gpuprov.output.status import status_data, status_json, status_prometheus
from gpuprov.output.status_table import age, status_table_text
from tests.unit.status_data import host, unreachable

NOW = 1765044000.0 + 365 * 86400 + 7200   # 2026-12-06T20:00Z: 2h after the last apply


def fleet() -> dict[str, dict[str, Any]]:
    data = {name: host(name) for name in ("gpu-01", "gpu-02", "gpu-03")}
    data["gpu-02"]["gpus"][1]["temperature_c"] = 91.0
    data["gpu-03"]["host_health"]["reboot_pending"] = True
    data["gpu-04"] = unreachable("gpu-04")
    return data


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_table_json_and_prometheus_agree() -> None:
    data = fleet()
    alerts = host_alerts(data, {})
    outcome = status_outcome(data, alerts)
    assert (outcome.code, outcome.status) == (5, "unhealthy")   # an alert beats unreachable
    table = status_table_text(data, alerts, outcome, now=NOW)
    doc = json.loads(status_json(data, alerts, outcome, now=NOW))
    prom = samples(status_prometheus(data, alerts, outcome, now=NOW))
    last = table.rstrip("\n").splitlines()[-1]
    assert last == ("4 hosts: 2 healthy, 1 unhealthy (1 alert), 0 failed, 1 unreachable, "
                    "1 warning -> exit 5 (unhealthy)")
    assert doc["summary"] == {"hosts": 4, "healthy": 2, "unhealthy": 1, "failed": 0,
                              "unreachable": 1, "alerts": 1, "warnings": 1}
    assert (doc["exit_code"], doc["status"], doc["healthy"]) == (5, "unhealthy", False)
    assert {h: v["status"] for h, v in doc["hosts"].items()} == {
        "gpu-01": "healthy", "gpu-02": "unhealthy", "gpu-03": "healthy",
        "gpu-04": "unreachable"}
    message = "gpu-02 GPU 1: temperature 91 C >= 85 C (health_gpu_temperature_max)"
    assert [a["message"] for a in doc["alerts"]] == [
        message, "gpu-03: reboot pending (health_reboot_pending)"]
    assert f"ALERT {message}" in table and "warning gpu-03: reboot pending" in table
    for state, n in (("healthy", 2), ("unhealthy", 1), ("failed", 0), ("unreachable", 1)):
        assert prom[("gpuprov_status_hosts", (("status", state),))] == n
    assert prom[("gpuprov_status_exit_code", (("status", "unhealthy"),))] == 5
    assert prom[("gpuprov_status_alert", (("gpu", "1"), ("host", "gpu-02"),
                                          ("rule", "health_gpu_temperature_max")))] == 1
    labels = (("gpu", "1"), ("host", "gpu-02"), ("model", "NVIDIA A100-SXM4-80GB"),
              ("uuid", "GPU-00000001"))
    assert prom[("gpuprov_status_gpu_temperature_celsius", labels)] == 91.0
    assert prom[("gpuprov_status_gpu_memory_used_bytes", labels)] == 1200 * 1048576
    assert prom[("gpuprov_status_host_up", (("host", "gpu-04"),))] == 0
    assert prom[("gpuprov_status_host_healthy", (("host", "gpu-03"),))] == 1
    assert prom[("gpuprov_status_reboot_pending", (("host", "gpu-03"),))] == 1
    assert prom[("gpuprov_status_service_running", (("host", "gpu-01"),
                                                    ("service", "docker")))] == 1
    assert prom[("gpuprov_status_jupyter_http_status", (("host", "gpu-01"),))] == 403
    # every GPU of the JSON is in the table and in Prometheus
    for name, h in doc["hosts"].items():
        for g in h["gpus"]:
            assert prom[("gpuprov_status_gpu_utilization_percent",
                         (("gpu", str(g["index"])), ("host", name),
                          ("model", g["name"]), ("uuid", g["uuid"])))] == \
                g["utilization_gpu_pct"]
    assert table.count("NVIDIA A100-SXM4-80GB") == 6


def test_what_a_host_did_not_answer_has_no_sample_and_shows_unknown() -> None:
    data = {"h": host("h", gpus=1)}
    data["h"]["gpus"][0].update(temperature_c=None, power_draw_w=None, power_limit_w=None,
                                ecc_volatile_uncorrected=None)
    data["h"]["host_health"]["data_dir_free_mib"] = None
    data["gone"] = unreachable("gone")
    alerts = host_alerts(data, {"h": HealthRules()})
    text = status_prometheus(data, alerts, status_outcome(data, alerts))
    names = {name for name, _ in samples(text)}
    assert "gpuprov_status_gpu_temperature_celsius" not in names
    assert "gpuprov_status_gpu_ecc_volatile_uncorrected" not in names
    assert not any(dict(labels).get("host") == "gone" for name, labels in samples(text)
                   if name not in ("gpuprov_status_host_up", "gpuprov_status_host_healthy",
                                   "gpuprov_status_round_trips"))
    table = status_table_text(data, alerts, now=NOW)
    row = next(line for line in table.splitlines() if line.startswith("0 NVIDIA"))
    assert row.split()[6:9] == ["-", "-", "-"]       # temp, power, ECC unknown
    assert "gone  unreachable: timeout: no answer in 10s" in table
    assert "/data - GiB free" in table


def test_a_failed_host_is_2_and_a_healthy_fleet_0() -> None:
    healthy = {"a": host("a"), "b": host("b")}
    assert status_outcome(healthy, host_alerts(healthy, {})).code == 0
    assert status_outcome(healthy, host_alerts(healthy, {})).status == "healthy"
    broken = {**healthy, "c": {**host("c"), "error": "odd nvidia-smi output"},
              "d": unreachable("d")}
    alerts = host_alerts(broken, {})
    outcome = status_outcome(broken, alerts)
    assert (outcome.code, outcome.status) == (2, "failed")
    assert status_data(broken, alerts, outcome)["summary"]["failed"] == 1


def test_no_gpu_says_why_and_last_apply_age() -> None:
    data = {"h": host("h", gpus=0, gpu_reason="nvidia-smi is not installed",
                      last_apply={"time": "2026-12-06T18:00:00+00:00", "version": "0.1.0",
                                  "gpu_count": None})}
    now = 1765044000.0 + 365 * 86400 + 2 * 3600 + 5 * 60   # 2026-12-06T20:05Z
    table = status_table_text(data, host_alerts(data, {}), now=now)
    assert "no GPU: nvidia-smi is not installed" in table
    assert "last apply: 2h 5m ago, gpuprov 0.1.0" in table
    assert [age(s) for s in (42, 300, 7500, 93784)] == ["42s", "5m", "2h 5m", "1d 2h"]


def test_a_roles_note_is_shown_under_the_host_and_in_the_json() -> None:
    note = "k8s_node: kubelet, kubeadm not installed: install it with your cluster's tooling"
    data = {"node": host("node", notes=[note]), "gpu": host("gpu")}
    alerts = host_alerts(data, {})
    table = status_table_text(data, alerts, now=NOW)
    assert f"note: {note}" in " ".join(table.split())
    assert table.count("note:") == 1
    assert status_data(data, alerts, now=NOW)["hosts"]["node"]["notes"] == [note]


SHA = "3f2a9c1e5b7d4f60a1b2c3d4e5f60718293a4b5c"


def test_the_last_pull_is_shown_where_pull_mode_is_on_and_in_the_json() -> None:
    pulled = {"time": "2026-12-06T19:50:00Z", "commit": SHA, "ref": "main", "mode": "apply",
              "result": "failed", "message": "base: apt-get install failed"}
    data = {"on": host("on", last_pull=pulled),
            "ok": host("ok", last_pull={**pulled, "result": "unchanged", "message": ""}),
            "off": host("off")}
    table = status_table_text(data, host_alerts(data, {}), now=NOW)
    assert f"last pull: 10m ago, {SHA[:12]}, failed: base: apt-get install failed" in table
    assert f"last pull: 10m ago, {SHA[:12]}, unchanged\n" in table
    assert table.count("last pull:") == 2   # pull mode off: nothing shown
    outcome = status_outcome(data, host_alerts(data, {}))
    hosts = json.loads(status_json(data, host_alerts(data, {}), outcome))["hosts"]
    assert hosts["on"]["last_pull"] == pulled and hosts["off"]["last_pull"] is None


def test_a_pull_that_never_fetched_has_no_commit() -> None:
    data = {"h": host("h", last_pull={"time": "2026-12-06T19:50:00Z", "commit": None,
                                      "ref": "main", "mode": "apply",
                                      "result": "fetch-failed", "message": "no route"})}
    table = status_table_text(data, host_alerts(data, {}), now=NOW)
    assert "last pull: 10m ago, no commit, fetch-failed: no route" in table


def test_the_last_pull_is_in_the_prometheus_metrics_of_hosts_in_pull_mode_only() -> None:
    pulled = {"time": "2026-12-06T19:50:00Z", "commit": SHA, "ref": "main", "mode": "apply",
              "result": "failed", "message": "base: apt-get install failed"}
    data = {"bad": host("bad", last_pull=pulled),
            "ok": host("ok", last_pull={**pulled, "result": "unchanged", "mode": "check"}),
            "new": host("new", last_pull={**pulled, "result": "applied"}),
            "never": host("never", last_pull={**pulled, "commit": None,
                                              "result": "fetch-failed"}),
            "off": host("off"), "gone": unreachable("gone")}
    prom = samples(status_prometheus(data, host_alerts(data, {}), now=NOW))
    when = NOW - 600   # 19:50Z
    for name in ("bad", "ok", "new", "never"):
        assert prom[("gpuprov_status_last_pull_timestamp_seconds", (("host", name),))] == when
    assert {h: prom[("gpuprov_status_last_pull_success", (("host", h),))]
            for h in ("bad", "ok", "new", "never")} == \
        {"bad": 0.0, "ok": 1.0, "new": 1.0, "never": 0.0}
    info = {labels: v for (n, labels), v in prom.items() if n == "gpuprov_status_last_pull_info"}
    assert info == {
        (("commit", SHA), ("host", "bad"), ("mode", "apply"), ("result", "failed")): 1.0,
        (("commit", SHA), ("host", "ok"), ("mode", "check"), ("result", "unchanged")): 1.0,
        (("commit", SHA), ("host", "new"), ("mode", "apply"), ("result", "applied")): 1.0,
        (("commit", ""), ("host", "never"), ("mode", "apply"), ("result", "fetch-failed")): 1.0}
    pull_hosts = {dict(labels)["host"] for n, labels in prom if "last_pull" in n}
    assert pull_hosts == {"bad", "ok", "new", "never"}   # off and gone: no sample at all


def test_the_last_pull_metrics_have_help_and_type_and_escaped_labels() -> None:
    odd = 'a"b\\c\nd'
    data = {"h": host("h", last_pull={"time": "not a time", "commit": odd, "ref": "main",
                                      "mode": "apply", "result": "applied", "message": ""})}
    text = status_prometheus(data, host_alerts(data, {}), now=NOW)
    for metric in ("timestamp_seconds", "success", "info"):
        assert f"# HELP gpuprov_status_last_pull_{metric} " in text
        assert f"# TYPE gpuprov_status_last_pull_{metric} gauge" in text
    assert 'commit="a\\"b\\\\c\\nd"' in text
    prom = samples(text)
    assert prom[("gpuprov_status_last_pull_info", (("commit", odd), ("host", "h"),
                                                   ("mode", "apply"), ("result", "applied")))] == 1
    # a time the host wrote that cannot be read: no timestamp, never a false 0
    assert not any(n == "gpuprov_status_last_pull_timestamp_seconds" for n, _ in prom)
