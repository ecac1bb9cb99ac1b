"""benchmarks/ without the fleet: the measurements of one process, the
verdicts read from each tool's output, and the table and ratios."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from benchmarks import peers, report
from benchmarks.measure import Sample, machine_busy_seconds, measure, passive_opens
from benchmarks.tools import Gpuprov, Run


def sample(stdout: str = "", rc: int = 0, wall: float = 1.0, hosts: int = 2) -> Sample:
    return Sample(wall=wall, controller_cpu=0.5, machine_cpu=2.0, peak_rss_mib=50.0,
                  returncode=rc, stdout=stdout, stderr="",
                  connections={f"h{i}": 1 for i in range(hosts)})


class FakeHost:
    def __init__(self, name: str) -> None:
        self.name, self.groups = name, ("lab",)


def test_measure_times_a_child_and_its_cpu(tmp_path: Path) -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\n"
    got = measure([sys.executable, "-c", burn + "print('out')"], tmp_path, dict(os.environ),
                  {"self": os.getpid()}, poll=0.05)
    assert got.returncode == 0 and got.stdout == "out\n"
    assert got.controller_cpu >= 0.15 and got.wall >= got.controller_cpu * 0.5
    assert got.machine_cpu > 0 and got.peak_rss_mib > 1
    # this machine's own namespace: whatever else accepted connections meanwhile
    assert list(got.connections) == ["self"] and got.connections["self"] >= 0


def test_machine_cpu_and_passive_opens_read_proc() -> None:
    assert machine_busy_seconds() > 0
    assert passive_opens(os.getpid()) >= 0


def test_pyinfra_verdict_from_its_grand_total() -> None:
    tool = peers.Pyinfra(None, [FakeHost("a"), FakeHost("b")], Path("."), None)
    changed = ("Operation  Hosts  Success  Error  No Change\n"
               "Grand total  60  \x1b[1m12\x1b[0m  -  48\n")
    assert tool.judge("converge", sample(changed)).changed == 12
    clean = tool.judge("no-change 1", sample("Grand total  60  -  -  60\n"))
    assert clean.no_change
    failed = tool.judge("no-change 1", sample("Grand total  60  -  2  58\n", rc=1))
    assert not failed.ok
    assert not tool.judge("converge", sample("Traceback ...", rc=1)).ok


def test_ansible_verdict_from_the_play_recap() -> None:
    tool = peers.Ansible(None, [FakeHost("lab-01"), FakeHost("cloud-01")], Path("."), None)
    recap = ("PLAY RECAP ****\n"
             "cloud-01                   : ok=40   changed={c}   unreachable=0    failed=0    "
             "skipped=1    rescued=0    ignored=0\n"
             "lab-01                     : ok=40   changed=0   unreachable=0    failed={f}    "
             "skipped=1    rescued=0    ignored=0\n")
    assert tool.judge("no-change 1", sample(recap.format(c=0, f=0))).no_change
    assert tool.judge("no-change 1", sample(recap.format(c=3, f=0))).changed == 3
    assert not tool.judge("no-change 1", sample(recap.format(c=0, f=1), rc=2)).ok
    half = recap.splitlines()[:2]
    assert not tool.judge("converge", sample("\n".join(half))).ok, "a host missing"


def test_gpuprov_verdict_from_its_reports(tmp_path: Path) -> None:
    tool = Gpuprov(None, [], tmp_path, None)
    (tmp_path / "no-change-1.json").write_text(json.dumps({"hosts": [
        {"host": "a", "changed": 0, "round_trips": 12}, {"host": "b", "changed": 0,
                                                         "round_trips": 13}]}))
    run = tool.judge("no-change 1", sample())
    assert run.no_change and run.round_trips == {"a": 12, "b": 13}
    (tmp_path / "drift-check-1.json").write_text(json.dumps({"in_sync": False, "hosts": {
        "a": {"drift": [{"resource": "file /etc/motd"}], "round_trips": 2}}}))
    drift = tool.judge("drift-check 1", sample(rc=3))
    assert drift.ok and drift.changed == 1 and not drift.no_change
    assert not tool.judge("no-change 2", sample()).ok, "no report written"


def test_status_is_measured_after_the_no_change_runs(tmp_path: Path) -> None:
    tool = Gpuprov(None, [], tmp_path, None)
    labels = [label for label, _ in tool.runs()]
    assert labels.index("status") == labels.index("no-change 2") + 1
    argv = dict(tool.runs())["status"]
    assert argv[argv.index("-m") + 2:argv.index("-m") + 4] == ["status", "inventory.yml"]
    hosts = {"a": {"reachable": True, "round_trips": 1},
             "b": {"reachable": True, "round_trips": 1}}
    (tmp_path / "status.json").write_text(json.dumps({"hosts": hosts}))
    run = tool.judge("status", sample(rc=5))
    assert (run.ok, run.changed, run.round_trips) == (True, 0, {"a": 1, "b": 1})
    assert not tool.judge("status", sample(rc=2)).ok
    hosts["b"] = {"reachable": False, "round_trips": 0}
    (tmp_path / "status.json").write_text(json.dumps({"hosts": hosts}))
    gone = tool.judge("status", sample())
    assert not gone.ok and gone.note == "unreachable: b"


def test_forks_reach_gpuprov_only_when_given() -> None:
    assert "--forks" not in Gpuprov(None, [], Path("."), None).runs()[0][1]
    argv = Gpuprov(None, [], Path("."), 32).runs()[-1][1]
    assert argv[-2:] == ["--forks", "32"] and "drift-check" in argv


def test_table_and_ratios_come_from_the_same_runs() -> None:
    results = {
        "gpuprov": [Run("converge", sample(wall=10), True, 30),
                    Run("no-change 1", sample(wall=2), True, 0, {"h0": 12, "h1": 13}),
                    Run("no-change 2", sample(wall=4), True, 0),
                    Run("drift-check 1", sample(wall=1), True, 0)],
        "pyinfra": [Run("converge", sample(wall=5), True, 60),
                    Run("no-change 1", sample(wall=6), True, 0),
                    Run("no-change 2", sample(wall=6), True, 2)],
    }
    ratios = report.ratios(results)
    assert ratios["pyinfra/gpuprov wall, converge"] == 0.5
    assert ratios["pyinfra/gpuprov wall, no-change"] == 2.0
    assert ratios["pyinfra/gpuprov wall, no-change vs drift-check"] == 6.0
    meta = {"date": "2026-12-06 12:00:00 UTC", "hosts": 2, "machine": "2 cores",
            "forks": 10, "versions": {"gpuprov": "0.1.0"}}
    text = report.summary(meta, results)
    assert "12-13" in text and "CHANGED 2" in text and "no change" in text
    assert "2 hosts" in text and "forks: 10" in text and "2.00x" in text


def test_drift_checks_profile_reaches_the_profile_file(tmp_path: Path) -> None:
    from benchmarks.report import write_profile

    tool = Gpuprov(None, [], tmp_path, None)
    (tmp_path / "drift-check-1.json").write_text(json.dumps({"in_sync": True, "hosts": {
        "a": {"drift": [], "connections": 1, "round_trips": 4, "profile": [
            {"phase": "facts", "play": "GPU host", "seconds": 0.7, "why": "ops", "count": 30,
             "slowest": [["NvidiaSmi()", 0.23]]}]}}}))
    drift = tool.judge("drift-check 1", sample())
    write_profile(tmp_path / "p.txt", {"gpuprov": [drift]})
    text = (tmp_path / "p.txt").read_text()
    assert "profile a: 1 connection(s), 4 round trip(s)" in text
    assert "ops: 30 facts; slowest: NvidiaSmi() 0.23s" in text


def test_measure_counts_the_open_files_of_the_tool() -> None:
    hold = "import os, time\nfds = [os.open('/dev/null', os.O_RDONLY) for _ in range(40)]\n" \
           "time.sleep(0.4)\n"
    got = measure([sys.executable, "-c", hold], Path("."), dict(os.environ), {}, poll=0.05)
    assert got.returncode == 0 and got.peak_fds >= 40


def test_slug_makes_every_label_a_plain_file_name() -> None:
    from benchmarks.tools import slug, unreachable_label

    assert slug("no-change 1") == "no-change-1"
    assert slug(unreachable_label(2, "drift-check")) == "2-unreachable-drift-check"


def test_unreachable_hosts_add_runs_on_an_inventory_with_dead_hosts(tmp_path: Path) -> None:
    from benchmarks.tools import with_dead_hosts

    base = {"all": {"vars": {"ansible_user": "admin"},
                    "children": {"lab": {"hosts": {"lab-01": {"ansible_host": "10.0.0.11"}}}}}}
    inv = with_dead_hosts(base, ["10.0.0.30", "10.0.0.31"])
    assert inv["all"]["children"]["unreachable"]["hosts"] == {
        "dead-01": {"ansible_host": "10.0.0.30"}, "dead-02": {"ansible_host": "10.0.0.31"}}
    assert "unreachable" not in base["all"]["children"], "the base inventory is left as it was"
    plain = [label for label, _ in Gpuprov(None, [], tmp_path, None).runs()]
    runs = Gpuprov(None, [], tmp_path, None, ["10.0.0.30", "10.0.0.31"]).runs()
    assert [label for label, _ in runs] == plain + ["+2 unreachable: no-change",
                                                    "+2 unreachable: drift-check"]
    assert all("inventory-unreachable.yml" in argv for _, argv in runs[-2:])
    assert all("inventory.yml" in argv for _, argv in runs[:-2])


def test_a_run_with_dead_hosts_is_ok_when_exactly_they_were_unreachable(tmp_path: Path) -> None:
    tool = Gpuprov(None, [], tmp_path, None, ["10.0.0.30", "10.0.0.31"])
    dead = {"dead-01": {"drift": [], "unreachable": "timeout", "round_trips": 0},
            "dead-02": {"drift": [], "unreachable": "timeout", "round_trips": 0}}
    live = {"a": {"drift": [], "unreachable": None, "round_trips": 2}}
    (tmp_path / "2-unreachable-drift-check.json").write_text(json.dumps(
        {"hosts": {**live, **dead}}))
    run = tool.judge("+2 unreachable: drift-check", sample(rc=4))
    assert run.no_change and run.round_trips == {"a": 2}
    (tmp_path / "2-unreachable-drift-check.json").write_text(json.dumps(
        {"hosts": {**live, "dead-01": dead["dead-01"]}}))
    short = tool.judge("+2 unreachable: drift-check", sample(rc=4))
    assert not short.ok and "got dead-01" in short.note
    (tmp_path / "2-unreachable-no-change.json").write_text(json.dumps({"hosts": [
        {"host": "a", "changed": 0, "round_trips": 5, "unreachable": None},
        {"host": "dead-01", "changed": 0, "round_trips": 0, "unreachable": "timeout"},
        {"host": "dead-02", "changed": 0, "round_trips": 0, "unreachable": "timeout"}]}))
    assert tool.judge("+2 unreachable: no-change", sample(rc=4)).no_change
    assert not tool.judge("+2 unreachable: no-change", sample(rc=2)).ok
    # a fleet host unreachable in a plain run is a failure, named
    (tmp_path / "no-change-1.json").write_text(json.dumps({"hosts": [
        {"host": "a", "changed": 0, "round_trips": 5, "unreachable": "timeout"}]}))
    plain = tool.judge("no-change 1", sample(rc=4))
    assert not plain.ok and "unreachable: a" in plain.note


def test_what_dead_hosts_add_is_set_against_the_connect_timeout() -> None:
    runs = [Run("no-change 1", sample(wall=9), True, 0),
            Run("no-change 2", sample(wall=11), True, 0),
            Run("drift-check 1", sample(wall=6), True, 0),
            Run("drift-check 2", sample(wall=6), True, 0),
            Run("+2 unreachable: no-change", sample(wall=14, rc=4), True, 0),
            Run("+2 unreachable: drift-check", sample(wall=17, rc=4), True, 0)]
    lines = report.unreachable_effect(runs, 10.0)
    assert lines == [
        "gpuprov no-change: 10.00 s without, 14.00 s with 2 unreachable hosts: +4.00 s, "
        "less than the connect timeout (10 s)",
        "gpuprov drift-check: 6.00 s without, 17.00 s with 2 unreachable hosts: +11.00 s, "
        "NOT less than the connect timeout (10 s)"]
    # the plain means are not moved by the runs with dead hosts
    assert report.mean_wall(runs, "no-change") == 10.0


def test_the_forks_line_says_what_gpuprov_chose() -> None:
    from benchmarks.run import forks_line

    assert forks_line(10, 16) == "10"
    assert forks_line(None, 16) == "auto (16) (default)"


def test_dead_addresses_lie_past_the_fleets_last_host() -> None:
    from benchmarks.run import dead_addresses
    from tests.fleet.network import host_address

    class Fleet:
        hosts = [type("H", (), {"index": i})() for i in range(3)]
    assert dead_addresses(Fleet(), 2) == [host_address(3), host_address(4)]
    assert dead_addresses(Fleet(), 0) == []
