"""Issue 17: one exit-code precedence for every command, the summary line
(counts and the exit code), the one-line header, the roles a host never got
to and why, "nothing selected", and drift-check's table, JSON and Prometheus
saying the same. Local hosts (the local connector) and one SSH host on a
closed loopback port, through the real entry point."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import socket
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest

from gpuprov.cli import exit_codes
from gpuprov.cli.exit_codes import (
    EXIT_DRIFT,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    drift_outcome,
    host_code,
    worst,
)
from gpuprov.engine.executor import Executor, RunOptions
from gpuprov.engine.results import CONDITION, STOPPED, TAGS, HostResult, RunResult, TaskResult
from gpuprov.model.inventory import Inventory
from gpuprov.model.playbook import load_plays
from gpuprov.output.drift import drift_data, drift_prometheus, drift_table_text
from gpuprov.output.summary import header_line, summary_line
from tests.unit.cli_runner import Outcome, gpuprov

# file(): one file per host; a role may skip (ctx.skip), refuse (ctx.fail: its
# tasks() fails) or fail a task (directory() where its file is)
ROLE = '''\
from gpuprov.ops.files import directory, file


def tasks(ctx):
    v = ctx.vars
    if ctx.role in v["skip_roles"]:
        raise ctx.skip(f"{ctx.role} is in skip_roles")
    if ctx.host.name in v["refuse_on"].get(ctx.role, []):
        raise ctx.fail("told to refuse")
    yield file(f"{v['out_dir']}/{ctx.host.name}.{ctx.role}", "hello\\n",
               owner=v["file_owner"], group=v["file_group"])
    if ctx.host.name in v["fail_task_on"].get(ctx.role, []):
        yield directory(f"{v['out_dir']}/{ctx.host.name}.{ctx.role}")   # a file: it fails
'''

DEFAULTS = """\
# Roles that leave every host alone (ctx.skip).
skip_roles: []
# role -> hosts whose tasks() refuse.
refuse_on: {{}}
# role -> hosts where a task fails.
fail_task_on: {{}}
# Where the files go.
out_dir: {out}
# Owner of the files.
file_owner: {me}
# Group of the files.
file_group: {group}
"""

PLAYBOOK = """\
- name: first
  hosts: all
  roles:
    - role: base
      tags: [setup]
    - role: driver
      tags: [gpu]
    - role: toolkit
      tags: [gpu]
- name: second
  hosts: all
  roles:
    - role: app
"""


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Project:
    def __init__(self, root: Path) -> None:
        self.root, self.out = root, root / "out"
        self.out.mkdir()
        for name in ("base", "driver", "toolkit", "app"):
            role = root / "roles" / name
            role.mkdir(parents=True)
            (role / "tasks.py").write_text(ROLE)
            (role / "defaults.yml").write_text(DEFAULTS.format(
                out=self.out, me=pwd.getpwuid(os.getuid()).pw_name,
                group=grp.getgrgid(os.getgid()).gr_name))
        (root / "site.yml").write_text(PLAYBOOK)
        self.inventory = root / "hosts.yml"
        self.inventory.write_text("all:\n  vars:\n    ansible_connection: local\n"
                                  "    become: false\n  hosts:\n    h1:\n    h2:\n")

    def with_dead_host(self) -> Path:
        path = self.root / "hosts-dead.yml"
        path.write_text(textwrap.dedent(f"""\
            all:
              vars:
                become: false
              hosts:
                h1:
                  ansible_connection: local
                h2:
                  ansible_connection: local
                dead:
                  ansible_connection: ssh
                  ansible_host: 127.0.0.1
                  ansible_port: {closed_port()}
                  ssh_known_hosts_file: {self.root / 'known_hosts'}
            """))
        return path

    def run(self, command: str, *args: str, inventory: Path | None = None,
            **vars: Any) -> Outcome:
        extra = ["-e", json.dumps(vars)] if vars else []
        return gpuprov(command, str(inventory or self.inventory), "-p", "site.yml", *extra,
                       *args)


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUPROV_CACHE_DIR", "off")
    monkeypatch.setattr("gpuprov.connectors.ssh._sleep", lambda s: None)
    return Project(tmp_path)


def last_line(result: Outcome) -> str:
    return result.stdout.rstrip("\n").splitlines()[-1]


# -- the table -------------------------------------------------------------------------

def test_the_worst_wins_in_ansibles_order() -> None:
    assert exit_codes.PRECEDENCE == (EXIT_FAILED, EXIT_UNREACHABLE, EXIT_DRIFT, EXIT_OK)
    assert (EXIT_OK, EXIT_ERROR, EXIT_FAILED, EXIT_DRIFT, EXIT_UNREACHABLE,
            EXIT_INTERRUPTED) == (0, 1, 2, 3, 4, 130)
    assert worst([]) == EXIT_OK
    assert worst([EXIT_OK, EXIT_DRIFT]) == EXIT_DRIFT
    assert worst([EXIT_DRIFT, EXIT_UNREACHABLE, EXIT_OK]) == EXIT_UNREACHABLE
    assert worst([EXIT_UNREACHABLE, EXIT_FAILED, EXIT_DRIFT]) == EXIT_FAILED
    assert host_code(unreachable=True, failed=True) == EXIT_UNREACHABLE
    assert host_code(failed=True, drift=True) == EXIT_FAILED
    assert host_code(drift=True) == EXIT_DRIFT and host_code() == EXIT_OK


@pytest.mark.parametrize("command", ["apply", "drift-check", "verify", "facts", "onboard", "run"])
def test_every_command_states_its_exit_codes_in_help(command: str) -> None:
    result = gpuprov(command, "--help")
    assert result.code == 0
    text = result.stdout[result.stdout.index("Exit codes"):]
    assert "the worst wins, 2 > 4 > 3 > 0" in text or "the worst wins, 2 > 4 > 0" in text
    codes = [int(m) for m in re.findall(r"^\s+(\d+)\s{2,}\S", text, re.M)]
    assert codes == sorted(codes) and {0, 1, 2, 4, 130} <= set(codes)
    assert (3 in codes) == (command == "drift-check")
    assert "usage or input error" in text and "interrupted" in text


def test_the_table_in_the_readme_is_the_one_in_exit_codes() -> None:
    from gpuprov.cli.app import cli

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for command in exit_codes.MEANINGS:
        if command not in cli.commands:
            continue
        meanings = dict(exit_codes.exit_code_table(command))
        row = " | ".join(meanings.get(c, "—") for c in (0, 1, 2, 3, 4, 130))
        assert f"| `{command}` | {row} |" in readme, command
    assert "failed (2) > unreachable (4) > drift (3) > ok (0)" in " ".join(readme.split())


# -- apply -----------------------------------------------------------------------------

def test_apply_ok_starts_with_a_header_and_ends_with_the_summary(project: Project) -> None:
    result = project.run("apply")
    assert result.code == 0, result.both
    assert result.stdout.splitlines()[0] == (
        "apply site.yml: roles base, driver, toolkit, app on 2 hosts")
    assert re.fullmatch(r"2 hosts: 0 ok, 2 changed \(8 tasks\), 0 failed, 0 unreachable "
                        r"in \d+\.\ds -> exit 0 \(ok\)", last_line(result)), result.stdout
    assert "not reached" not in result.stdout
    again = project.run("apply", "--check", "-t", "gpu")
    assert again.stdout.splitlines()[0] == (
        "apply --check site.yml: roles driver, toolkit (tags: gpu) on 2 hosts")
    assert last_line(again).startswith("2 hosts: 2 ok, 0 changed, 0 failed, 0 unreachable in ")
    assert "not reached on h1, h2: base, app (not selected by --tags gpu)" in again.stdout


def test_apply_exits_2_when_a_task_fails_and_names_what_was_not_reached(
        project: Project) -> None:
    result = project.run("apply", "--report", "r.json", fail_task_on={"driver": ["h2"]})
    assert result.code == EXIT_FAILED, result.both
    assert "not reached on h2: toolkit, app (an earlier failure in driver)" in result.stdout
    assert last_line(result).startswith("2 hosts: 0 ok, 1 changed (4 tasks), 1 failed, "
                                        "0 unreachable in ")
    assert last_line(result).endswith(" -> exit 2 (failed)")
    report = json.loads(Path("r.json").read_text())
    assert (report["exit_code"], report["status"]) == (2, "failed")
    h2 = next(h for h in report["hosts"] if h["host"] == "h2")
    assert h2["not_reached"] == [
        {"role": "toolkit", "play": "first", "why": "an earlier failure in driver",
         "kind": STOPPED},
        {"role": "app", "play": "second", "why": "an earlier failure in driver",
         "kind": STOPPED}]


def test_apply_a_role_that_refuses_stops_the_host_before_any_task(project: Project) -> None:
    result = project.run("apply", refuse_on={"driver": ["h1"]})
    assert result.code == EXIT_FAILED, result.both
    assert ("not reached on h1: base, toolkit (driver failed before any task ran); "
            "app (an earlier failure in driver)") in result.stdout


def test_apply_unreachable_is_4_and_failed_beats_it(project: Project) -> None:
    dead = project.with_dead_host()
    result = project.run("apply", inventory=dead)
    assert result.code == EXIT_UNREACHABLE, result.both
    assert "not reached on dead: base, driver, toolkit, app (the host is unreachable)" \
        in result.stdout
    assert " 0 failed, 1 unreachable in " in last_line(result)
    assert last_line(result).endswith("-> exit 4 (unreachable)")
    both = project.run("apply", inventory=dead, fail_task_on={"app": ["h1"]})
    assert both.code == EXIT_FAILED, both.both
    assert both.stdout.splitlines()[-1].endswith("-> exit 2 (failed)")


def test_a_skip_condition_is_named_with_its_reason(project: Project) -> None:
    result = project.run("apply", skip_roles=["toolkit"])
    assert result.code == 0, result.both
    assert "not reached on h1, h2: toolkit (skipped: toolkit is in skip_roles)" in result.stdout


def test_a_verification_play_with_nothing_to_verify_says_so(project: Project) -> None:
    Path("v.yml").write_text("- name: setup\n  hosts: all\n  roles: [base]\n"
                             "- name: check\n  hosts: all\n  verify: on-change\n"
                             "  roles: [app]\n")
    first = gpuprov("apply", str(project.inventory), "-p", "v.yml")
    assert first.code == 0 and "not reached" not in first.stdout, first.both
    second = gpuprov("apply", str(project.inventory), "-p", "v.yml")
    assert second.code == 0, second.both
    assert ("not reached on h1, h2: app (skipped: nothing changed on this host, verify: "
            "on-change)") in second.stdout


def test_onboard_and_verify_use_the_same_precedence() -> None:
    # verify's rows: a failed host beats an unreachable one
    rows = ["pass", "unreachable", "fail"]
    assert worst(host_code(failed=r == "fail", unreachable=r == "unreachable")
                 for r in rows) == EXIT_FAILED
    assert worst(host_code(unreachable=r == "unreachable") for r in rows[:2]) == EXIT_UNREACHABLE


# -- drift-check -------------------------------------------------------------------------

def test_drift_check_codes_0_3_2_4(project: Project) -> None:
    assert project.run("apply").code == 0
    in_sync = project.run("drift-check")
    assert in_sync.code == EXIT_OK, in_sync.both
    assert in_sync.stdout.splitlines()[0] == (
        "drift-check site.yml: roles base, driver, toolkit, app on 2 hosts")
    assert last_line(in_sync) == ("2 hosts: 2 in sync, 0 drifted, 0 failed, 0 unreachable "
                                  "-> exit 0 (in sync)")

    (project.out / "h1.driver").write_text("edited\n")
    drift = project.run("drift-check")
    assert drift.code == EXIT_DRIFT, drift.both
    assert last_line(drift) == ("2 hosts: 1 in sync, 1 drifted (1 resource), 0 failed, "
                                "0 unreachable -> exit 3 (drift)")

    # a host that could not be checked is a failure (2), also with drift elsewhere
    failed = project.run("drift-check", refuse_on={"toolkit": ["h2"]})
    assert failed.code == EXIT_FAILED, failed.both
    assert last_line(failed) == ("2 hosts: 0 in sync, 1 drifted (1 resource), 1 failed, "
                                 "0 unreachable -> exit 2 (failed)")
    assert ("not reached on h2: base, driver (toolkit failed before any task ran); "
            "app (an earlier failure in toolkit)") in failed.stdout

    dead = project.run("drift-check", inventory=project.with_dead_host())
    assert dead.code == EXIT_UNREACHABLE, dead.both
    assert last_line(dead) == ("3 hosts: 1 in sync, 1 drifted (1 resource), 0 failed, "
                               "1 unreachable -> exit 4 (unreachable)")


def test_drift_check_json_and_prometheus_keep_stdout_clean_and_agree(project: Project) -> None:
    assert project.run("apply").code == 0
    (project.out / "h1.base").write_text("edited\n")
    (project.out / "h1.app").write_text("edited\n")
    table = project.run("drift-check", refuse_on={"app": ["h2"]})
    as_json = project.run("drift-check", "--format", "json", refuse_on={"app": ["h2"]})
    prom = project.run("drift-check", "--format", "prometheus", refuse_on={"app": ["h2"]})
    assert table.code == as_json.code == prom.code == EXIT_FAILED
    data = json.loads(as_json.stdout)   # no header in a machine format
    assert "drift-check site.yml" not in as_json.stderr   # nor on stderr: cron mails it
    assert table.stdout.startswith("drift-check site.yml: ")
    verbose = project.run("drift-check", "--format", "json", "-v", refuse_on={"app": ["h2"]})
    assert any(ln.startswith("drift-check site.yml: ") for ln in verbose.stderr.splitlines())
    assert data["summary"] == {"hosts": 2, "in_sync": 0, "drifted": 1, "drifted_resources": 2,
                               "failed": 1, "unreachable": 0}
    assert (data["exit_code"], data["status"]) == (2, "failed")
    assert last_line(table) == ("2 hosts: 0 in sync, 1 drifted (2 resources), 1 failed, "
                                "0 unreachable -> exit 2 (failed)")
    assert 'gpuprov_drift_check_hosts{status="failed"} 1' in prom.stdout
    assert 'gpuprov_drift_check_hosts{status="drift"} 1' in prom.stdout
    assert "gpuprov_drift_check_drifted_resources 2" in prom.stdout
    assert 'gpuprov_drift_check_exit_code{status="failed"} 2' in prom.stdout
    assert not prom.stdout.startswith("drift-check") and prom.stdout.startswith("# HELP")


def agree(run: RunResult) -> None:
    """Table, JSON and Prometheus of ONE run say the same counts and exit code."""
    outcome = drift_outcome(run)
    table = drift_table_text(run, outcome=outcome).rstrip("\n").splitlines()[-1]
    data = drift_data(run, outcome)
    prom = dict(line.rsplit(" ", 1) for line in drift_prometheus(run, outcome).splitlines()
                if not line.startswith("#"))
    s = data["summary"]
    assert table == summary_line(run, outcome, drift=True)
    assert table.startswith(f"{s['hosts']} host")
    assert f": {s['in_sync']} in sync, {s['drifted']} drifted" in table
    assert f", {s['failed']} failed, {s['unreachable']} unreachable -> " in table
    if s["drifted"]:
        assert f"drifted ({s['drifted_resources']} resource" in table
    assert table.endswith(f"-> exit {data['exit_code']} ({data['status'].replace('_', ' ')})")
    for status, key in (("in_sync", "in_sync"), ("drift", "drifted"), ("failed", "failed"),
                        ("unreachable", "unreachable")):
        assert float(prom[f'gpuprov_drift_check_hosts{{status="{status}"}}']) == s[key]
    assert float(prom["gpuprov_drift_check_drifted_resources"]) == s["drifted_resources"]
    assert float(prom[f'gpuprov_drift_check_exit_code{{status="{data["status"]}"}}']) \
        == data["exit_code"]


def test_table_json_and_prometheus_agree_for_the_same_run(project: Project) -> None:
    assert project.run("apply").code == 0
    (project.out / "h1.base").write_text("edited\n")
    inventory = Inventory.load(project.with_dead_host())
    plays = load_plays("site.yml")
    for extra in ({}, {"refuse_on": {"driver": ["h2"]}}):
        options = RunOptions(check=True, extra_vars=dict(extra))
        run = Executor(inventory, plays, list(inventory.hosts.values()), options).run(
            "drift-check")
        agree(run)
    assert drift_outcome(run).code == EXIT_FAILED


def test_a_failed_check_with_drift_found_before_it_is_2_not_3(project: Project) -> None:
    # what the first run of README command 1 showed on a machine without kernel
    # headers: drift lines, then a failure; it exited 3 and said "1 failed"
    assert project.run("apply").code == 0
    (project.out / "h1.base").write_text("edited\n")
    result = project.run("drift-check", "-l", "h1", fail_task_on={"driver": ["h1"]})
    assert result.code == EXIT_FAILED, result.both
    assert result.stdout.splitlines()[1].startswith("h1  failed: ")   # [0]: the header
    assert "file " in result.stdout          # the drift seen before the failure stays listed
    assert last_line(result) == ("1 host: 0 in sync, 0 drifted, 1 failed, 0 unreachable "
                                 "-> exit 2 (failed)")
    data = json.loads(project.run("drift-check", "-l", "h1", "--format", "json",
                                  fail_task_on={"driver": ["h1"]}).stdout)
    assert data["hosts"]["h1"]["status"] == "failed" and data["status"] == "failed"
    assert data["hosts"]["h1"]["not_reached"] == [
        {"role": "toolkit", "play": "first", "why": "an earlier failure in driver",
         "kind": STOPPED},
        {"role": "app", "play": "second", "why": "an earlier failure in driver",
         "kind": STOPPED}]


# -- nothing selected ------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["apply", "drift-check"])
def test_tags_that_select_nothing_exit_1_before_connecting(project: Project,
                                                           command: str) -> None:
    dead = project.with_dead_host()   # connecting to it would say "unreachable"
    result = project.run(command, "-t", "never", inventory=dead)
    assert result.code == EXIT_ERROR, result.both
    assert ("error: nothing selected: tags never match no role of site.yml "
            "(roles: base, driver, toolkit, app)") in result.stderr
    assert "unreachable" not in result.both and result.stdout == ""
    skipped = project.run(command, "--skip-tags", "setup,gpu,app", inventory=dead)
    assert skipped.code == EXIT_ERROR, skipped.both
    assert "nothing selected: --skip-tags app,gpu,setup leave no role of site.yml" \
        in skipped.stderr
    assert list(project.out.iterdir()) == []


def test_tags_footer_groups_hosts_and_json_says_why(project: Project) -> None:
    result = project.run("drift-check", "--format", "json", "-t", "setup", "-v")
    data = json.loads(result.stdout)
    assert "drift-check site.yml: roles base (tags: setup) on 2 hosts" in (
        result.stderr.splitlines())
    assert data["hosts"]["h1"]["not_reached"][0] == {
        "role": "driver", "play": "first", "why": "not selected by --tags setup", "kind": TAGS}
    table = project.run("drift-check", "-t", "setup")
    assert ("not reached on h1, h2: driver, toolkit, app (not selected by --tags setup)"
            in table.stdout)


# -- verify, facts, interrupted --------------------------------------------------------------

def test_facts_exit_4_on_an_unreachable_host(project: Project) -> None:
    result = gpuprov("facts", str(project.with_dead_host()))
    assert result.code == EXIT_UNREACHABLE, result.both
    assert gpuprov("facts", str(project.inventory)).code == EXIT_OK


def test_facts_exit_2_when_a_hosts_facts_failed_also_beside_an_unreachable_one(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gpuprov.cli.facts.collect_facts", lambda hosts, options, names: {
        "h1": {"unreachable": "no answer", "error": None},
        "h2": {"error": "internal error at x.py:1"}})
    assert gpuprov("facts", str(project.inventory)).code == EXIT_FAILED


@pytest.mark.parametrize(("statuses", "code"), [
    (("pass", "pass"), EXIT_OK), (("pass", "unreachable"), EXIT_UNREACHABLE),
    (("fail", "pass"), EXIT_FAILED), (("unreachable", "fail"), EXIT_FAILED)])
def test_verify_exit_codes(project: Project, monkeypatch: pytest.MonkeyPatch,
                           statuses: tuple[str, str], code: int) -> None:
    def checked(inventory: Any, hosts: Any, options: Any, progress: Any) -> RunResult:
        run = RunResult("verify", check=False)
        for name, status in zip(("h1", "h2"), statuses, strict=True):
            host = run.host(name)
            if status == "unreachable":
                host.unreachable = "no answer"
            else:
                host.tasks.append(TaskResult("verify", "gpu", "ok" if status == "pass" else
                                             "failed", data={"status": status}))
        return run

    monkeypatch.setattr("gpuprov.cli.verify.run_verify", checked)
    for fmt in ("table", "json"):
        result = gpuprov("verify", str(project.inventory), "--format", fmt)
        assert result.code == code, result.both


def test_interrupted_is_130(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: Executor, command: str) -> RunResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(Executor, "run", interrupted)
    result = project.run("drift-check")
    assert result.code == EXIT_INTERRUPTED and "interrupted" in result.stderr


# -- the pieces ------------------------------------------------------------------------------

def test_header_and_summary_plurals() -> None:
    assert header_line("apply", "site.yml", ["a"], [], ["x"], 1) == (
        "apply site.yml: roles a (skip-tags: x) on 1 host")
    run = RunResult("apply", check=False, started=1.0, finished=3.0)
    host = run.host("h1")
    host.tasks.append(TaskResult("r", "t", "changed"))
    assert summary_line(run, exit_codes.outcome(0)) == (
        "1 host: 0 ok, 1 changed (1 task), 0 failed, 0 unreachable in 2.0s -> exit 0 (ok)")
    assert summary_line(RunResult("drift-check", True), None, drift=True) == "no hosts checked"


def test_settle_names_the_roles_after_the_stop_and_keeps_skips() -> None:
    host = HostResult("h")
    host.tasks = [TaskResult("a", "t", "ok"), TaskResult("b", "t", "failed", error="boom")]
    host.settle("p", ["a", "s", "b", "c", "d"], {"s": "no sshd installed"}, finished=False)
    assert host.reached == {"a", "b"}
    assert [(n.role, n.why, n.kind) for n in host.not_reached()] == [
        ("s", "no sshd installed", CONDITION), ("c", "an earlier failure in b", STOPPED),
        ("d", "an earlier failure in b", STOPPED)]
    # a later play that lists a reached role again (for its defaults) is no news
    host.note("q", ["a", "e"], "tagged never", TAGS)
    assert [n.role for n in host.not_reached()] == ["s", "c", "d", "e"]
    planning = HostResult("h", error="role b: refused")
    planning.settle("p", ["a", "b", "c"], {}, finished=False, failing="b")
    assert planning.reached == {"b"} and planning.stopped == "an earlier failure in b"
    assert [(n.role, n.why) for n in planning.not_reached()] == [
        ("a", "b failed before any task ran"), ("c", "b failed before any task ran")]
    gone = HostResult("h", unreachable="timeout")
    gone.settle("p", ["a", "b"], {}, finished=False)
    assert gone.reached == set()
    assert {n.why for n in gone.notes} == {"the host became unreachable"}


def test_click_keeps_the_epilog_lines() -> None:
    assert exit_codes.epilog("verify").startswith("\b\n")
    formatter = click.HelpFormatter()
    formatter.write_paragraph()
    formatter.write_text(exit_codes.epilog("verify"))
    assert "  0    every host passes" in formatter.getvalue()
