"""`gpuprov status` on the command line, over canned status data (the
collector is replaced; engine/status.py has its own tests): the exit codes
and their precedence, the formats, -o, a bad rule variable before any
connection, --watch over one collector until Ctrl-C."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gpuprov.cli import status as status_cli
from tests.unit.cli_runner import gpuprov
from tests.unit.status_data import host, unreachable


class FakeCollector:
    """Hands out one canned collection per collect(); the last one again after."""

    instances: list[FakeCollector] = []
    script: list[dict[str, dict[str, Any]]] = []

    def __init__(self, hosts: list[Any], options: Any) -> None:
        self.names = [h.name for h in hosts]
        self.collected = 0
        self.closed = False
        FakeCollector.instances.append(self)

    def collect(self) -> dict[str, dict[str, Any]]:
        data = self.script[min(self.collected, len(self.script) - 1)]
        self.collected += 1
        return {n: data[n] for n in self.names}

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(status_cli, "StatusCollector", FakeCollector)
    FakeCollector.instances = []
    FakeCollector.script = [{n: host(n) for n in ("gpu-01", "gpu-02", "gpu-03")}]
    path = tmp_path / "inventory.yml"
    path.write_text(textwrap.dedent("""\
        all:
          hosts:
            gpu-01:
            gpu-02:
          children:
            warm:
              vars:
                health_gpu_temperature_max: 95
              hosts:
                gpu-03:
        """))
    return path


def canned(**hosts: dict[str, Any]) -> None:
    FakeCollector.script = [{**FakeCollector.script[0], **hosts}]


def test_healthy_is_0_with_the_table_and_one_collector_closed(inventory: Path) -> None:
    result = gpuprov("status", str(inventory))
    assert result.code == 0, result.both
    assert result.stdout.rstrip().splitlines()[-1] == \
        "3 hosts: 3 healthy, 0 unhealthy, 0 failed, 0 unreachable -> exit 0 (healthy)"
    assert "gpu-01  healthy  driver 550.54.14, CUDA 12.4" in result.stdout
    [collector] = FakeCollector.instances
    assert collector.closed and collector.collected == 1


def test_an_alert_is_5_even_beside_an_unreachable_host(inventory: Path) -> None:
    hot = host("gpu-01")
    hot["gpus"][0]["temperature_c"] = 90.0
    canned(**{"gpu-01": hot, "gpu-02": unreachable("gpu-02")})
    result = gpuprov("status", str(inventory))
    assert result.code == 5, result.both
    assert "ALERT gpu-01 GPU 0: temperature 90 C >= 85 C (health_gpu_temperature_max)" \
        in result.stdout
    assert result.stdout.rstrip().endswith("-> exit 5 (unhealthy)")
    only_unreachable = gpuprov("status", "-i", str(inventory), "-l", "gpu-02:gpu-03")
    assert only_unreachable.code == 4, only_unreachable.both
    assert FakeCollector.instances[-1].names == ["gpu-02", "gpu-03"]


def test_the_groups_rule_applies(inventory: Path) -> None:
    warm = host("gpu-03")
    warm["gpus"][0]["temperature_c"] = 90.0      # under warm's 95
    canned(**{"gpu-03": warm})
    assert gpuprov("status", str(inventory)).code == 0


def test_a_bad_rule_value_is_exit_1_before_any_connection(inventory: Path) -> None:
    text = inventory.read_text().replace("health_gpu_temperature_max: 95",
                                         "health_gpu_temperature_max: warm")
    inventory.write_text(text)
    result = gpuprov("status", str(inventory))
    assert result.code == 1, result.both
    assert f"error: {inventory}:8: gpu-03: health_gpu_temperature_max='warm': must be a " \
        "number (0-200)" in " ".join(result.stderr.split())
    assert FakeCollector.instances == []


def test_json_and_prometheus_say_what_the_table_says(inventory: Path) -> None:
    canned(**{"gpu-02": unreachable("gpu-02")})
    table = gpuprov("status", str(inventory))
    as_json = gpuprov("status", str(inventory), "--format", "json")
    prom = gpuprov("status", str(inventory), "--format", "prometheus")
    assert table.code == as_json.code == prom.code == 4
    data = json.loads(as_json.stdout)
    assert data["summary"]["unreachable"] == 1 and data["status"] == "unreachable"
    assert data["hosts"]["gpu-01"]["round_trips"] == 1
    assert 'gpuprov_status_host_up{host="gpu-02"} 0.0' in prom.stdout.splitlines()
    assert as_json.stderr == prom.stderr == ""


def test_prometheus_has_the_last_pull_of_a_host_in_pull_mode(inventory: Path) -> None:
    pulled = {"time": "2026-12-06T19:50:00Z", "commit": "3f2a9c1e5b7d", "ref": "main",
              "mode": "apply", "result": "applied", "message": ""}
    canned(**{"gpu-01": host("gpu-01", last_pull=pulled)})
    prom = gpuprov("status", str(inventory), "--format", "prometheus")
    assert prom.code == 0, prom.both
    lines = prom.stdout.splitlines()
    assert 'gpuprov_status_last_pull_success{host="gpu-01"} 1.0' in lines
    assert 'gpuprov_status_last_pull_info{commit="3f2a9c1e5b7d",host="gpu-01",mode="apply",' \
        'result="applied"} 1.0' in lines
    assert not any("last_pull" in line and "gpu-02" in line for line in lines)


def test_output_file_written_atomically_with_its_mode(inventory: Path, tmp_path: Path) -> None:
    target = tmp_path / "status.prom"
    result = gpuprov("status", str(inventory), "--format", "prometheus", "-o", str(target),
                     "--report-mode", "0640")
    assert result.code == 0 and result.stdout == ""
    assert target.read_text().startswith("# HELP gpuprov_status_")
    assert target.stat().st_mode & 0o777 == 0o640
    table = tmp_path / "status.txt"
    assert gpuprov("status", str(inventory), "-o", str(table)).code == 0
    assert table.read_text().rstrip().endswith("-> exit 0 (healthy)")


def test_verbose_says_each_hosts_round_trips(inventory: Path) -> None:
    result = gpuprov("status", str(inventory), "-v", "--format", "json")
    assert "gpu-01: 1 round trip" in result.stderr.splitlines()


@pytest.mark.parametrize("args", [["--format", "json"], ["--format", "prometheus"],
                                  ["-o", "x.txt"]])
def test_watch_is_the_table_on_the_terminal_only(inventory: Path, args: list[str]) -> None:
    result = gpuprov("status", str(inventory), "--watch", "2", *args)
    assert result.code == 1 and "--watch" in result.stderr, result.both
    assert FakeCollector.instances == []


def test_watch_refreshes_over_one_collector_until_ctrl_c(
        inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hot = host("gpu-01")
    hot["gpus"][0]["temperature_c"] = 88.0
    FakeCollector.script = [FakeCollector.script[0], {**FakeCollector.script[0], "gpu-01": hot}]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(status_cli.time, "sleep", sleep)
    result = gpuprov("status", str(inventory), "--watch", "5")
    assert result.code == 130, result.both
    assert "interrupted" in result.stderr
    [collector] = FakeCollector.instances
    assert collector.collected == 3 and collector.closed and sleeps == [5, 5, 5]
    # piped: one table per refresh, each with its summary line
    summaries = re.findall(r"^3 hosts: .*$", result.stdout, re.M)
    assert [s.rsplit("-> ", 1)[1] for s in summaries] == [
        "exit 0 (healthy)", "exit 5 (unhealthy)", "exit 5 (unhealthy)"]
    assert result.stdout.count("every 5s (Ctrl-C ends)") == 3


def test_help_states_the_exit_codes_and_the_rules() -> None:
    result = gpuprov("status", "--help")
    assert result.code == 0
    text = result.stdout[result.stdout.index("Exit codes"):]
    assert "the worst wins, 5 > 2 > 4 > 0" in text
    codes = [int(m) for m in re.findall(r"^\s+(\d+)\s{2,}\S", text, re.M)]
    assert codes == [0, 1, 2, 4, 5, 130]
    assert "health_gpu_temperature_max" in result.stdout


def test_watch_at_a_terminal_redraws_in_place(inventory: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr(status_cli, "stdout",
                        lambda: Console(file=screen, force_terminal=True, width=160))
    calls: list[float] = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(status_cli.time, "sleep", sleep)
    result = gpuprov("status", str(inventory), "--watch", "1")
    assert result.code == 130, result.both
    [collector] = FakeCollector.instances
    assert collector.collected == 2 and collector.closed
    drawn = screen.getvalue()
    assert "\x1b[" in drawn                     # cursor moves: the table is redrawn in place
    assert drawn.count("every 1s (Ctrl-C ends)") >= 2
