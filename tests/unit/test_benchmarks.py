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
