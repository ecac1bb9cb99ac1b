"""`gpuprov pull` end to end in-process: a git repository in tmp_path as a file://
URL, state and textfile dirs in tmp_path, the playbook run faked (FakeRunner):
what it decides, what it records, its exit codes."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit import pull_helpers
from tests.unit.pull_helpers import Host

host = pull_helpers.host   # the fixture


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_run_applies_and_records_the_commit(host: Host) -> None:
    sha = host.origin.commit("settings")
    result = host.pull()
    assert result.code == 0, result.both
    assert host.runner.commands == ["apply"]
    command, name, checkout, connection = host.runner.calls[0]
    assert (name, connection) == ("node1", "local")
    last = host.last()
    assert last["result"] == "applied" and last["commit"] == sha
    assert last["last_good_commit"] == sha and last["changed"] == 1
    assert last["mode"] == "apply" and last["ref"] == "main" and last["message"] == ""
    assert last["gpuprov_version"] and last["duration_s"] >= 0
    assert last["time"].endswith("Z") and last["last_good_time"].endswith("Z")
    assert host.checkout_head() == sha
    report = host.report()
    assert report["pull"]["commit"] == sha and report["pull"]["mode"] == "apply"
    assert report["command"] == "apply" and report["hosts"][0]["host"] == "node1"
    assert report["exit_code"] == 0 and report["status"] == "applied"
    assert Path(last["report"]).name.endswith(f"-{sha[:12]}.json")
    assert f"gpuprov pull: applied commit={sha[:12]}" in result.stdout
    # ran from a laid-out copy, which is gone after the run
    assert not (host.state / "pull" / "next").exists()


def test_same_commit_in_sync_is_unchanged_and_applies_nothing(host: Host) -> None:
    sha = host.origin.commit("settings")
    assert host.pull().code == 0
    result = host.pull()
    assert result.code == 0, result.both
    assert host.runner.commands == ["apply", "drift-check"]
    last = host.last()
    assert last["result"] == "unchanged" and last["commit"] == sha
    assert last["changed"] == 0 and last["last_good_commit"] == sha
    assert "unchanged" in result.stdout
    # a check runs from the checkout itself: the commit is the last good one
    assert host.runner.calls[1][2] == host.state / "pull" / "repo"


def test_same_commit_with_drift_applies_again(host: Host) -> None:
    host.pull()
    host.runner.drift = 2
    result = host.pull()
    assert result.code == 0, result.both
    assert host.runner.commands == ["apply", "drift-check", "apply"]
    assert host.last()["result"] == "applied" and host.last()["drifted"] == 2


def test_a_new_commit_applies_and_the_report_names_it(host: Host) -> None:
    host.pull()
    first = host.last()["commit"]
    host.origin.write({"inventory.yml": "all:\n  hosts:\n    node1:\n      motd: bye\n"})
    sha = host.origin.commit("new motd")
    result = host.pull()
    assert result.code == 0, result.both
    assert host.runner.commands == ["apply", "apply"]
    last = host.last()
    assert last["commit"] == sha != first and last["last_good_commit"] == sha
    assert last["interval"] == 900   # pull.yml's default: status' stale rule reads it
    assert host.report()["pull"]["commit"] == sha
    assert host.checkout_head() == sha


def test_a_fetch_failure_keeps_the_previous_state(host: Host) -> None:
    host.pull()
    good = host.last()
    host.configure(repo=(host.tmp / "gone").as_uri())
    result = host.pull()
    assert result.code == 2, result.both
    last = host.last()
    assert last["result"] == "fetch-failed" and last["commit"] is None
    assert "fetch file://" in last["message"] and "gone" in last["message"]
    assert last["last_good_commit"] == good["commit"]
    assert last["last_good_time"] == good["last_good_time"]
    assert host.checkout_head() == good["commit"]
    assert host.runner.commands == ["apply"]          # nothing ran
    assert host.report()["pull"]["result"] == "fetch-failed"
    prom = host.textfile.read_text()
    assert "gpuprov_pull_success 0.0" in prom
    assert 'result="fetch-failed"' in prom
    assert "fetch-failed" in result.stdout


def test_a_yaml_error_is_a_bad_commit_and_the_next_good_one_applies(host: Host) -> None:
    good = host.origin.commit("good")
    host.pull()
    host.origin.write({"inventory.yml": "all:\n  hosts:\n    node1: [\n"})
    bad = host.origin.commit("broken")
    result = host.pull()
    assert result.code == 2, result.both
    last = host.last()
    assert last["result"] == "bad-commit" and last["commit"] == bad
    assert "inventory.yml:" in last["message"] and "invalid YAML" in last["message"]
    assert last["last_good_commit"] == good
    assert host.checkout_head() == good                # the previous checkout stays
    assert (host.state / "pull" / "repo" / "inventory.yml").read_text() == \
        "all:\n  hosts:\n    node1:\n      motd: hello\n    node2: {}\n"
    assert host.runner.commands == ["apply"]
    # retried at the next interval: still bad, nothing runs
    assert host.pull().code == 2 and host.runner.commands == ["apply"]
    host.origin.write({"inventory.yml": "all:\n  hosts:\n    node1: {}\n"})
    fixed = host.origin.commit("fixed")
    assert host.pull().code == 0
    assert host.last()["result"] == "applied" and host.last()["commit"] == fixed
    assert host.checkout_head() == fixed


def test_a_failed_task_keeps_the_last_good_commit_and_retries(host: Host) -> None:
    good = host.origin.commit("good")
    host.pull()
    host.origin.write({"roles/demo/defaults.yml": "x: 1\n"})
    new = host.origin.commit("new")
    host.runner.fail = True
    result = host.pull()
    assert result.code == 2, result.both
    last = host.last()
    assert last["result"] == "failed" and last["commit"] == new
    assert last["failed_tasks"] == 1 and "install thing" in last["message"]
    assert last["last_good_commit"] == good and host.checkout_head() == good
    host.runner.fail = False
    assert host.pull().code == 0
    assert host.runner.commands == ["apply", "apply", "apply"]   # no check: a new commit
    assert host.last()["last_good_commit"] == new


def test_a_host_not_in_the_inventory_is_a_bad_commit(host: Host) -> None:
    host.configure(host="node9")
    result = host.pull()
    assert result.code == 2, result.both
    last = host.last()
    assert last["result"] == "bad-commit"
    assert "host node9 not in inventory inventory.yml" in last["message"]
    assert host.runner.calls == []


def test_a_missing_playbook_is_a_bad_commit(host: Host) -> None:
    host.configure(playbook="playbooks/none.yml")
    assert host.pull().code == 2
    assert host.last()["result"] == "bad-commit"
    assert "playbooks/none.yml" in host.last()["message"]


def test_check_mode_reports_drift_with_exit_3_and_applies_nothing(host: Host) -> None:
    host.configure(mode="check")
    host.runner.drift = 3
    result = host.pull()
    assert result.code == 3, result.both
    last = host.last()
    assert last["result"] == "drift" and last["drifted"] == 3 and last["mode"] == "check"
    assert last["last_good_commit"] is None and host.checkout_head() is None
    assert host.runner.commands == ["drift-check"]
    assert "gpuprov_pull_drifted_resources 3.0" in host.textfile.read_text()


def test_the_check_flag_overrides_mode_apply(host: Host) -> None:
    result = host.pull("--check")
    assert result.code == 0, result.both
    assert host.runner.commands == ["drift-check"]
    assert host.last()["mode"] == "check" and host.last()["result"] == "unchanged"


def test_a_push_holding_the_lock_is_busy_exit_4(host: Host) -> None:
    host.runner.busy = True
    result = host.pull("--lock-timeout", "2")
    assert result.code == 4, result.both
    last = host.last()
    assert last["result"] == "busy" and last["message"].startswith("busy: apply by ops@laptop")
    assert last["last_good_commit"] is None and host.checkout_head() is None
    assert host.runner.options.lock_timeout == 2.0
    host.runner.busy = False
    assert host.pull().code == 0 and host.last()["result"] == "applied"


def test_a_second_pull_at_the_same_time_is_busy(host: Host) -> None:
    import fcntl

    (host.state / "pull").mkdir(parents=True)
    with open(host.state / "pull" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = host.pull()
    assert result.code == 4, result.both
    assert "another gpuprov pull" in host.last()["message"]


def test_reports_are_pruned_to_keep_reports(host: Host) -> None:
    host.configure(keep_reports=2)
    for i in range(4):
        host.origin.commit(f"c{i}")
        assert host.pull().code == 0
        time.sleep(1.01)   # report names are to the second
    reports = sorted((host.state / "reports").iterdir())
    assert len(reports) == 2
    assert reports[-1] == Path(host.last()["report"])


def test_a_run_that_repeats_the_last_one_keeps_pointing_at_its_report(host: Host) -> None:
    host.configure(keep_reports=2)
    host.origin.commit("good")
    assert host.pull().code == 0
    applied = host.last()["report"]
    time.sleep(1.01)   # report names are to the second
    # in sync again, again: no report of their own (each would push a kept one out)
    for _ in range(3):
        assert host.pull().code == 0
        assert host.last()["result"] == "unchanged"
    first_unchanged = host.last()["report"]
    assert len(list((host.state / "reports").iterdir())) == 2
    assert first_unchanged != applied and Path(applied).is_file()
    # the same failure again: one report for it, then pointing at that one
    host.origin.write({"inventory.yml": "all: [\n"})
    host.origin.commit("broken")
    for _ in range(3):
        assert host.pull().code == 2
        time.sleep(1.01)
    broken = host.last()
    assert broken["result"] == "bad-commit" and Path(broken["report"]).is_file()
    assert sorted(p.name for p in (host.state / "reports").iterdir()) == sorted(
        {Path(first_unchanged).name, Path(broken["report"]).name})


def test_file_modes(host: Host) -> None:
    os.umask(0o022)
    assert host.pull().code == 0
    assert mode(host.state / "reports") == 0o700
    assert mode(Path(host.last()["report"])) == 0o600
    assert mode(host.state / "pull" / "last.json") == 0o644
    assert mode(host.textfile) == 0o644
    assert not [p for p in host.textfile.parent.iterdir() if p.name.startswith(".")]


def test_the_textfile_after_success(host: Host) -> None:
    sha = host.origin.commit("x")
    assert host.pull().code == 0
    prom = host.textfile.read_text()
    assert "gpuprov_pull_success 1.0" in prom
    assert "gpuprov_pull_changed_resources 1.0" in prom
    assert (f'gpuprov_pull_info{{commit="{sha}",mode="apply",ref="main",result="applied"}} 1.0'
            in prom)
    assert "gpuprov_pull_last_run_timestamp_seconds" in prom
    # a failure after it keeps the time of the last success
    host.configure(repo=(host.tmp / "gone").as_uri())
    host.pull()
    prom = host.textfile.read_text()
    assert "gpuprov_pull_success 0.0" in prom
    assert "gpuprov_pull_last_success_timestamp_seconds 1." in prom


def test_a_tag_as_ref(host: Host) -> None:
    from tests.unit.pull_helpers import git

    sha = host.origin.commit("release")
    git(host.origin.path, "tag", "-a", "-m", "v1", "v1")
    host.origin.commit("later")
    host.configure(ref="v1")
    assert host.pull().code == 0
    assert host.last()["commit"] == sha and host.last()["ref"] == "v1"


def test_a_bad_config_exits_1_naming_file_and_line(host: Host) -> None:
    host.config.write_text("repo: file:///x\nhost: node1\nsplay: soon\n")
    result = host.pull()
    assert result.code == 1
    assert f"{host.config}:3: splay: expected an integer" in result.stderr
    assert not (host.state / "pull" / "last.json").exists()


@pytest.mark.parametrize("splay", [0, 1])
def test_splay_sleeps_unless_no_splay(host: Host, monkeypatch: pytest.MonkeyPatch,
                                      splay: int) -> None:
    import gpuprov.cli.pull as cli_pull
    from tests.unit.cli_runner import gpuprov

    slept: list[float] = []
    monkeypatch.setattr(cli_pull, "splay_sleep", slept.append)
    host.configure(splay=300 * splay)
    assert gpuprov("pull", "--config", str(host.config)).code == 0
    assert len(slept) == splay and all(0 <= s <= 300 for s in slept)
    assert host.pull().code == 0 and len(slept) == splay


class Refused:
    """A connector factory whose local connector refuses to run anything (the
    real Executor runs, nothing runs on this machine); records who it was asked
    for and the run lock's command."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.held: list[str] = []

    def __call__(self, h: Any, options: Any) -> Any:
        from gpuprov.connectors.local import LocalConnector
        from gpuprov.errors import UnreachableHost

        held = self.held

        class Connector(LocalConnector):
            def hold(self, command: Any, *, sudo: bool = False, stdin: bytes = b"") -> Any:
                held.append(command.display())
                raise UnreachableHost(self.host_name, "refused", "no local connector in tests")

            def run(self, command: Any, **kwargs: Any) -> Any:
                raise UnreachableHost(self.host_name, "refused", "no local connector in tests")

        self.seen.append((h.name, h.connection))
        return Connector(h.name)


@pytest.fixture()
def refused(host: Host, monkeypatch: pytest.MonkeyPatch) -> Refused:
    import gpuprov.cli.pull as cli_pull
    from gpuprov.engine.pull import executor_runner

    factory = Refused()
    monkeypatch.setattr(cli_pull, "make_runner",
                        lambda options: executor_runner(options, factory=factory))
    return factory


def test_the_executor_runs_the_commit_through_the_local_connector(
        host: Host, refused: Refused) -> None:
    """The real runner (apply's Executor), its connector refused before anything
    runs: the host is forced to the local connector, and unreachable is a failure."""
    cwd = os.getcwd()
    result = host.pull()
    assert result.code == 2, result.both
    assert refused.seen == [("node1", "local")]
    last = host.last()
    assert last["result"] == "failed" and "no local connector in tests" in last["message"]
    assert host.report()["hosts"][0]["unreachable"]
    assert os.getcwd() == cwd
    assert host.checkout_head() is None
    # the lock a push finds held says it is a pull's: "busy: pull apply by ..."
    assert len(refused.held) == 1 and " -x " in refused.held[0]
    assert "command=pull:apply who=" in refused.held[0]


def test_the_holder_line_of_a_pull() -> None:
    from gpuprov.engine.hostlock import EXCLUSIVE, SHARED, LockInfo, busy_reason, lock_mode

    assert lock_mode("pull:apply") == EXCLUSIVE and lock_mode("pull:drift-check") == SHARED
    line = LockInfo("pull:apply", "root@node1", time.time(), 7).line()
    assert busy_reason(line).startswith("busy: pull apply by root@node1 since ")


def test_a_broken_role_is_a_bad_commit(host: Host, refused: Refused) -> None:
    host.origin.write({"roles/demo/tasks.py": "def tasks(ctx):\n    return [\n"})
    sha = host.origin.commit("broken role")
    result = host.pull()
    assert result.code == 2, result.both
    last = host.last()
    assert last["result"] == "bad-commit" and last["commit"] == sha
    assert "tasks.py" in last["message"]
    assert refused.seen == []


def test_an_unexpected_error_is_recorded_as_failed(host: Host,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(target: Any, command: str) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(host.runner, "run", boom)
    result = host.pull()
    assert result.code == 2, result.both
    assert host.last()["result"] == "failed"
    assert host.last()["message"] == "internal error: RuntimeError: disk on fire"
    assert not (host.state / "pull" / "next").exists()


def test_a_link_out_of_the_tree_is_a_bad_commit(host: Host) -> None:
    (host.origin.path / "roles" / "demo" / "passwd").symlink_to("/etc/passwd")
    host.origin.commit("link")
    result = host.pull()
    assert result.code == 2, result.both
    assert host.last()["result"] == "bad-commit"
    assert "cannot lay out the commit" in host.last()["message"]

