"""The health rules of `gpuprov status` over canned status data: each rule,
its message (rule, host, GPU, value), overrides per group and host, a bad
value naming the variable and its file:line, warnings apart from alerts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpuprov.engine.health import ALERT, WARNING, HealthRules, evaluate, load_defaults, rules_for
from gpuprov.errors import InventoryError
from gpuprov.model.inventory import Inventory
from tests.unit.status_data import gpu, host, unreachable


def messages(data: dict, rules: HealthRules | None = None) -> list[str]:
    return [a.message for a in evaluate(data, rules or HealthRules())]


def test_a_healthy_host_has_no_alert() -> None:
    assert evaluate(host("gpu-01"), HealthRules()) == []


def test_the_defaults_file_is_the_dataclass_defaults(tmp_path: Path) -> None:
    defaults = load_defaults()
    assert len(defaults) == 9 and all(name.startswith("health_") for name in defaults)
    inv = _inventory(tmp_path, "all:\n  hosts:\n    h:\n")
    assert rules_for(inv.hosts["h"]) == HealthRules()


def test_temperature_at_the_limit_names_host_gpu_value_and_rule() -> None:
    data = host("gpu-03", gpus=2)
    data["gpus"][1]["temperature_c"] = 91.0
    data["gpus"][0]["temperature_c"] = 84.0
    alerts = evaluate(data, HealthRules())
    assert [a.message for a in alerts] == [
        "gpu-03 GPU 1: temperature 91 C >= 85 C (health_gpu_temperature_max)"]
    assert (alerts[0].rule, alerts[0].gpu, alerts[0].value, alerts[0].severity) == \
        ("health_gpu_temperature_max", 1, 91.0, ALERT)
    data["gpus"][1]["temperature_c"] = 85.0
    assert len(messages(data)) == 1   # at the limit is too hot


def test_ecc_pending_pages_and_rows() -> None:
    data = host("h", gpus=1)
    data["gpus"] = [gpu(0, ecc_volatile_uncorrected=3, retired_pages_pending=True,
                        remapped_rows_pending=True)]
    assert messages(data) == [
        "h GPU 0: 3 volatile uncorrected ECC errors > 0 (health_ecc_errors_max)",
        "h GPU 0: retired pages pending (health_pending_pages)",
        "h GPU 0: remapped rows pending (health_pending_pages)"]
    assert messages(data, HealthRules(ecc_errors_max=5, pending_pages=False)) == []


def test_unknown_values_raise_nothing() -> None:
    data = host("h", gpus=1)
    data["gpus"] = [gpu(0, temperature_c=None, ecc_volatile_uncorrected=None,
                        retired_pages_pending=None, remapped_rows_pending=None)]
    assert messages(data) == []


def test_thermal_and_power_throttling_alert_sw_power_cap_does_not() -> None:
    data = host("h", gpus=1)
    data["gpus"][0]["throttle_reasons"] = ["sw_power_cap", "gpu_idle"]
    assert messages(data) == []
    data["gpus"][0]["throttle_reasons"] = ["sw_power_cap", "hw_power_brake_slowdown",
                                           "sw_thermal_slowdown"]
    assert messages(data) == ["h GPU 0: throttled: hw_power_brake_slowdown, "
                              "sw_thermal_slowdown (health_throttle_reasons)"]
    rules = HealthRules(throttle_reasons=("sw_power_cap",))
    assert messages(data, rules) == ["h GPU 0: throttled: sw_power_cap (health_throttle_reasons)"]


@pytest.mark.parametrize(("jupyter", "expected"), [
    ({"container": "stopped", "http_status": None, "detail": None},
     "h: Jupyter down: container stopped (health_jupyter)"),
    ({"container": "absent", "http_status": None, "detail": None},
     "h: Jupyter down: container absent (health_jupyter)"),
    ({"http_status": None, "detail": "connection refused"},
     "h: Jupyter down: port 8888 does not answer: connection refused (health_jupyter)"),
    ({"http_status": 200},
     "h: Jupyter unauthenticated: HTTP 200 without credentials on port 8888 (health_jupyter)"),
    ({"http_status": 500}, "h: Jupyter unhealthy: HTTP 500 on port 8888 (health_jupyter)"),
    ({"http_status": 302}, None),
    ({"http_status": 403}, None),
])
def test_jupyter_down_or_unauthenticated(jupyter: dict, expected: str | None) -> None:
    data = host("h")
    data["services"]["jupyter"].update(jupyter)
    assert messages(data) == ([expected] if expected else [])
    assert messages(data, HealthRules(jupyter=False)) == []


def test_jupyter_not_declared_is_not_judged() -> None:
    data = host("h")
    data["services"]["jupyter"] = None
    assert messages(data) == []


def test_another_spec_is_a_warning() -> None:
    data = host("h")
    data["services"]["jupyter"]["spec_matches"] = False
    [alert] = evaluate(data, HealthRules())
    assert alert.severity == WARNING and alert.rule == "health_jupyter"


def test_a_gpu_missing_since_the_last_apply() -> None:
    data = host("h", gpus=3)
    data["last_apply"]["gpu_count"] = 4
    assert messages(data) == ["h: 3 of the 4 GPUs of the last apply (health_gpu_missing)"]
    data["gpus"], data["gpu_reason"] = [], "the nvidia module is not loaded"
    assert messages(data) == ["h: 0 of the 4 GPUs of the last apply (the nvidia module is "
                              "not loaded) (health_gpu_missing)"]
    data["last_apply"]["gpu_count"] = None       # an apply that did not count: no judgement
    assert messages(data) == []
    data["last_apply"] = None
    assert messages(data) == []


def test_a_stopped_service_alerts_an_absent_one_does_not() -> None:
    data = host("h")
    data["services"].update(docker="stopped", containerd="absent")
    assert messages(data) == ["h: docker is stopped (health_services)"]
    assert messages(data, HealthRules(services=("sshd",))) == []


def test_reboot_pending_is_a_warning_only() -> None:
    data = host("h")
    data["host_health"]["reboot_pending"] = True
    [alert] = evaluate(data, HealthRules())
    assert (alert.severity, alert.message) == (WARNING, "h: reboot pending (health_reboot_pending)")
    assert evaluate(data, HealthRules(reboot_pending=False)) == []


def test_a_host_not_asked_has_no_alert() -> None:
    assert evaluate(unreachable("h"), HealthRules()) == []
    broken = host("h")
    broken["error"] = "cannot read nvidia-smi's answer"
    broken["gpus"][0]["temperature_c"] = 99.0
    assert evaluate(broken, HealthRules()) == []


# -- the rules from the inventory --------------------------------------------------------

def _inventory(tmp_path: Path, text: str) -> Inventory:
    path = tmp_path / "inventory.yml"
    path.write_text(textwrap.dedent(text))
    return Inventory.load(path)


def test_overridden_per_group_and_host(tmp_path: Path) -> None:
    inv = _inventory(tmp_path, """\
        all:
          hosts:
            plain:
          children:
            hot:
              vars:
                health_gpu_temperature_max: 92
                health_throttle_reasons: [hw_slowdown]
              hosts:
                warm:
                hotter:
                  health_gpu_temperature_max: 95.5
                  health_reboot_pending: false
        """)
    assert rules_for(inv.hosts["plain"]) == HealthRules()
    assert rules_for(inv.hosts["warm"]) == HealthRules(gpu_temperature_max=92,
                                                        throttle_reasons=("hw_slowdown",))
    hotter = rules_for(inv.hosts["hotter"])
    assert (hotter.gpu_temperature_max, hotter.reboot_pending) == (95.5, False)
    data = host("warm", gpus=1)
    data["gpus"][0]["temperature_c"] = 92.0
    assert messages(data, rules_for(inv.hosts["warm"])) == [
        "warm GPU 0: temperature 92 C >= 92 C (health_gpu_temperature_max)"]


@pytest.mark.parametrize(("line", "must"), [
    ("health_gpu_temperature_max: hot", "must be a number (0-200)"),
    ("health_gpu_temperature_max: 500", "must be a number (0-200)"),
    ("health_gpu_temperature_max: true", "must be a number (0-200)"),
    ("health_ecc_errors_max: 1.5", "must be a whole number (>= 0)"),
    ("health_jupyter: 'no'", "must be true or false"),
    ("health_throttle_reasons: [hw_slowdwn]", "must be a list of: gpu_idle,"),
    ("health_services: [sshd, nginx]", "must be a list of: sshd, docker, containerd"),
])
def test_a_bad_value_names_the_variable_and_its_line(tmp_path: Path, line: str,
                                                     must: str) -> None:
    inv = _inventory(tmp_path, f"""\
        all:
          hosts:
            gpu-01:
              ssh_user: admin
              {line}
        """)
    with pytest.raises(InventoryError) as err:
        rules_for(inv.hosts["gpu-01"])
    name = line.split(":")[0]
    assert str(err.value).startswith(f"{tmp_path / 'inventory.yml'}:5: gpu-01: {name}=")
    assert must in str(err.value)


def _pulled(result: str, good: str | None, message: str = "", interval: int | None = 600
            ) -> dict:
    return host("gpu-01", last_pull={
        "time": "2026-12-07T00:00:00Z", "commit": "a" * 40, "ref": "main", "mode": "apply",
        "result": result, "message": message, "last_good_time": good, "interval": interval})


NOW = 1796601600.0   # 2026-12-07T00:00:00Z


def test_pull_mode_a_recent_good_pull_is_healthy_an_old_one_is_stale() -> None:
    recent = _pulled("fetch-failed", "2026-12-06T23:31:00Z", "fetch git://x main: timeout")
    assert evaluate(recent, HealthRules(), now=NOW) == []   # 29 min < 3 x 10 min
    [alert] = evaluate(_pulled("fetch-failed", "2026-12-06T23:20:00Z",
                               "fetch git://x main: timeout"), HealthRules(), now=NOW)
    assert (alert.rule, alert.severity, alert.value) == ("health_pull_stale_intervals",
                                                         "alert", 2400)
    assert alert.message == (
        "gpu-01: no good pull for 40 min, more than 3 x its 600 s pull interval (last: "
        "fetch-failed: fetch git://x main: timeout) (health_pull_stale_intervals)")


def test_pull_mode_never_a_good_pull_alerts_and_the_rule_can_be_off() -> None:
    never = _pulled("bad-commit", None, "commit 1234: inventory.yml:3: bad YAML")
    [alert] = evaluate(never, HealthRules(), now=NOW)
    assert alert.message.startswith("gpu-01: no good pull yet, more than 3 x its 600 s")
    assert alert.value is None
    assert evaluate(never, HealthRules(pull_stale_intervals=0), now=NOW) == []
    # pull mode off, or a last.json from before it carried its interval: nothing to judge
    assert evaluate(host("gpu-01"), HealthRules(), now=NOW) == []
    assert evaluate(_pulled("bad-commit", None, interval=None), HealthRules(), now=NOW) == []


def test_pull_stale_intervals_is_validated(tmp_path: Path) -> None:
    inv = _inventory(tmp_path, "all:\n  hosts:\n    h:\n      health_pull_stale_intervals: -1\n")
    with pytest.raises(InventoryError, match="health_pull_stale_intervals=-1"):
        rules_for(inv.hosts["h"])
    inv = _inventory(tmp_path, "all:\n  hosts:\n    h:\n      health_pull_stale_intervals: 2\n")
    assert rules_for(inv.hosts["h"]).pull_stale_intervals == 2
