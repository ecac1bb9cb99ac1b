"""The `gpuprov` command end to end: exit codes, drift-check formats and
--output, check mode and diffs, the JSON report and secrets, input errors,
the embedded default (no inventory: this machine) and the role search path.

Most runs go in-process through `gpuprov.cli.main()` (the real entry point,
which maps click's usage errors to exit 1) inside a CliRunner isolation; a
few go through `python -m gpuprov.cli` in a subprocess. The hosts are
`ansible_connection: local` with become off, and the test role writes under
tmp_path as the current user, so nothing needs root. The embedded-default
tests run the bundled playbook against this machine READ-ONLY and check
that nothing on it changed. The only network used is loopback (a closed
port on 127.0.0.1 for an unreachable SSH host).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import platform
import pwd
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpuprov.model.vars import is_secret_name
from tests.unit.cli_runner import Outcome, gpuprov

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name
SECRET_VAR = "api_token"
SECRET = "tok-9f3Kq2-NEVER-SHOWN-7ZxW"

ROLE_TASKS = '''\
"""greet: one file per host; a token file when api_token is set."""

from gpuprov.ops.files import file


def tasks(ctx):
    v = ctx.vars
    if ctx.host.name in v["fail_on"]:
        raise ctx.fail("told to fail on this host by fail_on")
    yield file(f"{v['out_dir']}/{ctx.host.name}.txt", v["greeting"] + "\\n",
               owner=v["file_owner"], group=v["file_group"])
    if v["api_token"]:
        yield file(f"{v['out_dir']}/{ctx.host.name}.token", "token=" + v["api_token"] + "\\n",
                   owner=v["file_owner"], group=v["file_group"], mode="0600", secret=True)
'''

ROLE_DEFAULTS = """\
# What each host's file says (one line).
greeting: hello
# Host names on which the role refuses to run (to test failures).
fail_on: []
# Directory the files are written to.
out_dir: {out}
# Owner of the files: whoever runs the tests.
file_owner: {me}
# Group of the files.
file_group: {group}
# API token written to <host>.token when set (a secret: never shown).
api_token: ""
"""

PLAYBOOK = """\
- name: greet everyone
  hosts: all
  roles:
    - role: greet
      tags: [hello]
"""

INVENTORY = """\
all:
  vars:
    ansible_connection: local
    become: false
  children:
    lab:
      hosts:
        h1:
        h2:
    cloud:
      hosts:
        h3:
"""
HOSTS = ("h1", "h2", "h3")


def error_lines(stderr: str) -> int:
    """How many errors were reported (`error: ...` from gpuprov, `Error: ...` from click)."""
    return sum(1 for ln in stderr.splitlines() if ln.lower().startswith("error"))


def gpuprov_process(*args: str, cwd: Path) -> Outcome:
    """Run `python -m gpuprov.cli` in a subprocess (no terminal, no stdin)."""
    proc = subprocess.run([sys.executable, "-m", "gpuprov.cli", *args], cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    result = Outcome(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.both, result.both
    return result


@dataclass
class Project:
    root: Path
    out: Path
    inventory: Path
    playbook: Path

    def file(self, host: str, suffix: str = "txt") -> Path:
        return self.out / f"{host}.{suffix}"

    def run(self, command: str, *args: str, inventory: Path | None = None) -> Outcome:
        return gpuprov(command, str(inventory or self.inventory), "-p", str(self.playbook),
                       *args)


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    return make_project(tmp_path, monkeypatch)


def make_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The greet role, site.yml and hosts.yml in tmp_path, the working directory."""
    out = tmp_path / "out"
    out.mkdir()
    role = tmp_path / "roles" / "greet"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE_TASKS)
    (role / "defaults.yml").write_text(ROLE_DEFAULTS.format(out=out, me=ME, group=MY_GROUP))
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    # not inventory.yml: that name is picked up when no inventory is given
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path, out, tmp_path / "hosts.yml", tmp_path / "site.yml")


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under directory: content, mode, mtime (to prove nothing was written)."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(directory))] = (path.read_bytes(), st.st_mode, st.st_mtime_ns)
    return out


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_unreachable_host(project: Project) -> Path:
    """h1 (local) and `dead`, an SSH host on a closed loopback port."""
    path = project.root / "hosts-dead.yml"
    path.write_text(textwrap.dedent(f"""\
        all:
          vars:
            become: false
          hosts:
            h1:
              ansible_connection: local
            dead:
              ansible_connection: ssh
              ansible_host: 127.0.0.1
              ansible_port: {closed_port()}
              ssh_known_hosts_file: {project.root / 'known_hosts'}
        """))
    return path


@pytest.fixture()
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """SSH setup retries without sleeping (the budget still counts the delays)."""
    slept: list[float] = []
    monkeypatch.setattr("gpuprov.connectors.ssh._sleep", slept.append)
    return slept


# -- exit codes --------------------------------------------------------------------

def test_apply_converges_then_second_apply_and_drift_check_find_nothing(
        project: Project) -> None:
    first = project.run("apply", "--report", "first.json")
    assert first.code == 0, first.both
    for host in HOSTS:
        path = project.file(host)
        assert path.read_text() == "hello\n"
        assert path.stat().st_uid == os.getuid()
    assert {h["host"]: h["changed"] for h in json.loads(Path("first.json").read_text())["hosts"]} \
        == dict.fromkeys(HOSTS, 1)

    second = project.run("apply", "--report", "second.json")
    assert second.code == 0, second.both
    report = json.loads(Path("second.json").read_text())
    assert {h["host"]: h["changed"] for h in report["hosts"]} == dict.fromkeys(HOSTS, 0)

    drift = project.run("drift-check")
    assert drift.code == 0, drift.both
    for host in HOSTS:
        assert f"{host}  in sync" in drift.stdout
    assert "DRIFT" not in drift.stdout


def test_apply_exits_2_when_a_task_fails_and_the_other_hosts_still_converge(
        project: Project) -> None:
    result = project.run("apply", "-e", '{"fail_on": ["h2"]}')
    assert result.code == 2, result.both
    # the host's name once, not again in its own message (issue 17)
    assert "h2 | failed | role greet: told to fail on this host by fail_on" in result.both
    assert "failed h2\n    role greet: told to fail on this host by fail_on" in result.both
    assert not project.file("h2").exists()
    assert project.file("h1").read_text() == project.file("h3").read_text() == "hello\n"


def test_apply_exits_4_when_a_host_is_unreachable(project: Project,
                                                  no_backoff: list[float]) -> None:
    inventory = with_unreachable_host(project)
    result = project.run("apply", inventory=inventory)
    assert result.code == 4, result.both
    # the host's name once, not again in its own message (issue 17)
    assert "dead | unreachable | refused: " in result.both
    assert "unreachable dead\n    refused: " in result.both
    # issue 15: nothing listens there, so the refusal is final at once (was: retried 5x)
    assert no_backoff == [], "a refused first connect was retried"
    assert project.file("h1").read_text() == "hello\n"  # the reachable host converged


def test_drift_check_exits_4_unreachable_even_when_drift_is_seen_elsewhere(
        project: Project, no_backoff: list[float]) -> None:
    # The worst wins, in Ansible's order: failed 2 > unreachable 4 > drift 3 > ok 0
    # (this used to be 3 when drift was found elsewhere: issue 17 made one precedence)
    inventory = with_unreachable_host(project)
    assert project.run("apply", "-l", "h1", inventory=inventory).code == 0

    in_sync_elsewhere = project.run("drift-check", inventory=inventory)
    assert in_sync_elsewhere.code == 4, in_sync_elsewhere.both
    assert "h1" in in_sync_elsewhere.stdout and "in sync" in in_sync_elsewhere.stdout
    assert "dead" in in_sync_elsewhere.stdout and "unreachable" in in_sync_elsewhere.stdout

    project.file("h1").write_text("tampered\n")
    drift_elsewhere = project.run("drift-check", inventory=inventory)
    assert drift_elsewhere.code == 4, drift_elsewhere.both
    assert drift_elsewhere.stdout.splitlines()[-1] == (
        "2 hosts: 0 in sync, 1 drifted (1 resource), 0 failed, 1 unreachable"
        " -> exit 4 (unreachable)")
    assert "not reached on dead: greet (the host is unreachable)" in drift_elsewhere.stdout
    # the table's header opens stdout; nothing on stderr for cron to mail
    assert drift_elsewhere.stdout.splitlines()[0] == "drift-check site.yml: roles greet on 2 hosts"
    assert "drift-check site.yml" not in drift_elsewhere.stderr


def test_exit_codes_through_the_real_entry_point(project: Project) -> None:
    """`python -m gpuprov.cli`: click's own usage-error code (2) must not leak out."""
    failed = gpuprov_process("apply", str(project.inventory), "-p", str(project.playbook),
                             "-e", '{"fail_on": ["h3"]}', cwd=project.root)
    assert failed.code == 2, failed.both
    drift = gpuprov_process("drift-check", str(project.inventory), "-p",
                            str(project.playbook), cwd=project.root)
    assert drift.code == 3, drift.both  # h3 never got its file
    assert "h3  DRIFT 1 resource" in drift.stdout
    usage = gpuprov_process("apply", str(project.inventory), "--serial", "0",
                            cwd=project.root)
    assert usage.code == 1, usage.both
    assert "--serial" in usage.stderr


# -- drift-check formats and --output ------------------------------------------------

@pytest.fixture()
def drifted(project: Project) -> Project:
    """Converged, then h1's file edited by hand."""
    assert project.run("apply").code == 0
    project.file("h1").write_text("edited by hand\n")
    return project


def test_drift_check_names_host_and_resource_in_every_format(drifted: Project) -> None:
    before = snapshot(drifted.root)
    resource = f"file {drifted.file('h1')}"

    table = drifted.run("drift-check")
    assert table.code == 3, table.both
    assert "h1  DRIFT 1 resource" in table.stdout
    assert f"{resource} — update content" in table.stdout
    assert "h2  in sync" in table.stdout and "h3  in sync" in table.stdout

    as_json = drifted.run("drift-check", "--format", "json")
    assert as_json.code == 3, as_json.both
    data = json.loads(as_json.stdout)
    assert data["in_sync"] is False
    assert data["hosts"]["h1"]["status"] == "drift"
    assert [d["resource"] for d in data["hosts"]["h1"]["drift"]] == [resource]
    assert "-edited by hand" in data["hosts"]["h1"]["drift"][0]["diff"]
    assert {data["hosts"][h]["status"] for h in ("h2", "h3")} == {"in_sync"}

    prom = drifted.run("drift-check", "--format", "prometheus")
    assert prom.code == 3, prom.both
    lines = prom.stdout.splitlines()
    assert 'gpuprov_drift_resources{host="h1"} 1.0' in lines
    assert 'gpuprov_drift_resources{host="h2"} 0.0' in lines
    assert 'gpuprov_host_in_sync{host="h1"} 0.0' in lines

    assert snapshot(drifted.root) == before  # read-only: not even the drifted file
    assert drifted.file("h1").read_text() == "edited by hand\n"


def _comparable(fmt: str, text: str) -> Any:
    """The report without what differs between two runs (time stamps, durations)."""
    if fmt == "json":
        data = json.loads(text)
        data.pop("checked_at")
        for host in data["hosts"].values():
            host.pop("profile")  # durations
        return data
    if fmt == "prometheus":
        return [ln for ln in text.splitlines()
                if not ln.startswith(("gpuprov_drift_check_timestamp_seconds",
                                      "gpuprov_drift_check_duration_seconds"))]
    return text


@pytest.mark.parametrize("fmt", ["table", "json", "prometheus"])
def test_drift_check_output_file_is_what_stdout_would_be_written_atomically(
        drifted: Project, fmt: str) -> None:
    shown = drifted.run("drift-check", "--format", fmt)
    assert shown.code == 3 and shown.stdout.strip(), shown.both

    reports = drifted.root / "reports"
    reports.mkdir()
    target = reports / f"drift.{fmt}"
    target.write_text("previous report\n")
    target.chmod(0o644)
    # A second name for the old file: an in-place rewrite would change it too,
    # a rename of a new file over the name leaves it alone.
    os.link(target, reports / "old-inode")
    before = snapshot(drifted.out)

    # node_exporter's textfile collector reads as its group: --report-mode 0640
    mode = ["--report-mode", "0640"] if fmt == "prometheus" else []
    written = drifted.run("drift-check", "--format", fmt, "--output", str(target), *mode)
    assert written.code == 3, written.both
    assert written.stdout == ""
    text = target.read_text()
    assert _comparable(fmt, text) == _comparable(fmt, shown.stdout)
    assert (reports / "old-inode").read_text() == "previous report\n"
    # deliberately changed (issue 14): the old file's mode is no longer kept;
    # a report holds diffs of root-only files: 0600 unless --report-mode says
    assert target.stat().st_mode & 0o777 == (0o640 if mode else 0o600)
    assert sorted(p.name for p in reports.iterdir()) == sorted([target.name, "old-inode"])
    assert snapshot(drifted.out) == before


def test_unwritable_output_or_report_is_one_error_before_anything_runs(
        project: Project) -> None:
    missing = project.root / "no-such-dir" / "x.prom"
    drift = project.run("drift-check", "--format", "prometheus", "--output", str(missing))
    assert drift.code == 1, drift.both
    assert f"--output {missing}: directory {missing.parent} does not exist" in drift.stderr
    report = project.run("apply", "--report", str(missing))
    assert report.code == 1, report.both
    assert "does not exist" in report.stderr
    assert list(project.out.iterdir()) == []  # refused before the run, not after it


# -- check mode, diffs, the report, secrets -------------------------------------------

def test_check_diff_shows_unified_diffs_and_writes_nothing(project: Project) -> None:
    project.file("h1").write_text("old greeting\n")
    before = snapshot(project.out)
    result = project.run("apply", "--check", "--diff")
    assert result.code == 0, result.both
    out = result.stdout
    h1, h2 = project.file("h1"), project.file("h2")
    assert f"--- {h1}" in out and f"+++ {h1}" in out
    assert "-old greeting" in out and "+hello" in out and "@@ -1 +1 @@" in out
    assert "--- /dev/null" in out and f"+++ {h2}" in out
    assert "check mode" in out
    assert snapshot(project.out) == before
    assert not h2.exists()


def test_report_has_every_host_and_change_and_no_secret(project: Project) -> None:
    assert is_secret_name(SECRET_VAR)
    inventory = project.root / "hosts-secret.yml"
    inventory.write_text(INVENTORY.replace("    become: false\n",
                                           f"    become: false\n    {SECRET_VAR}: {SECRET}\n"))

    checked = project.run("apply", "--check", "--diff", "-v", "--report", "check.json",
                          inventory=inventory)
    assert checked.code == 0, checked.both
    applied = project.run("apply", "--diff", "-vv", "--report", "apply.json",
                          inventory=inventory)
    assert applied.code == 0, applied.both
    listed = gpuprov("inventory", str(inventory), "--list")
    assert listed.code == 0
    project.file("h2", "token").write_text("token=changed\n")
    drift = project.run("drift-check", "--format", "json", inventory=inventory)
    assert drift.code == 3, drift.both

    # the secret did reach the host...
    for host in ("h1", "h3"):
        assert project.file(host, "token").read_text() == f"token={SECRET}\n"
        assert project.file(host, "token").stat().st_mode & 0o777 == 0o600
    # ...and nowhere else
    for name, text in [("check stdout/stderr", checked.both), ("apply", applied.both),
                       ("inventory --list", listed.both), ("drift-check", drift.both),
                       ("check.json", Path("check.json").read_text()),
                       ("apply.json", Path("apply.json").read_text())]:
        assert SECRET not in text, f"the secret leaked into {name}"
    assert "********" in checked.stdout  # the token file's diff is there, masked

    for name in ("check.json", "apply.json"):
        report = json.loads(Path(name).read_text())
        hosts = {h["host"]: h for h in report["hosts"]}
        assert set(hosts) == set(HOSTS)
        for host, data in hosts.items():
            resources = [c["resource"] for t in data["tasks"] for c in t["changes"]]
            assert resources == [f"file {project.file(host)}",
                                 f"file {project.file(host, 'token')}"], (name, host)
            assert data["changed"] == 2


# -- bad input: one error naming the file:line, exit 1 ----------------------------------

def _bad_inventory(project: Project) -> tuple[list[str], str]:
    path = project.root / "hosts-with-a-rather-long-name-for-wrapping-dup.yml"
    path.write_text("all:\n  hosts:\n    h1:\n      become: false\n    h1:\n"
                    "      become: true\n")
    return ["apply", str(path), "-p", str(project.playbook)], f"{path}:5: duplicate key 'h1'"


def _missing_role(project: Project) -> tuple[list[str], str]:
    book = project.root / "playbook-naming-a-role-that-is-not-there-anywhere.yml"
    book.write_text("- hosts: all\n  roles:\n    - greet\n    - nosuchrole\n")
    return (["apply", str(project.inventory), "-p", str(book)],
            f"{book}:4: role 'nosuchrole' not found")


def _markup_in_name(project: Project) -> tuple[list[str], str]:
    path = project.root / "inv[bold].yml"
    path.write_text("all:\n  hosts:\n    a:\n    a:\n")
    return ["inventory", str(path), "--list"], f"{path}:4: duplicate key 'a'"


BAD_INPUT = {
    "duplicate key in inventory": _bad_inventory,
    "playbook names a missing role": _missing_role,
    "brackets in a file name are not markup": _markup_in_name,
    "unknown tag": lambda p: (["apply", str(p.inventory), "-p", str(p.playbook), "-t", "nope"],
                              "unknown tag(s): nope"),
    "unknown skip tag": lambda p: (["drift-check", str(p.inventory), "-p", str(p.playbook),
                                    "--skip-tags", "hello,nope"], "unknown tag(s): nope"),
    "limit matches nothing": lambda p: (["apply", str(p.inventory), "-p", str(p.playbook),
                                         "-l", "gpu-*"],
                                        "host pattern 'gpu-*' matches no host or group"),
    "missing inventory": lambda p: (["drift-check", "nope.yml", "-p", str(p.playbook)],
                                    "nope.yml: file not found"),
    "serial 0": lambda p: (["apply", str(p.inventory), "-p", str(p.playbook), "--serial", "0"],
                           "Invalid value for '--serial'"),
    "serial not a number": lambda p: (["apply", str(p.inventory), "--serial", "ten"],
                                      "Invalid value for '--serial'"),
    # the rule of a play's serial: (a share is at most 100%)
    "serial over 100%": lambda p: (["apply", str(p.inventory), "--serial", "150%"],
                                   "Invalid value for '--serial': must be a positive number"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_clear_error_and_exit_1(project: Project, case: str) -> None:
    args, expected = BAD_INPUT[case](project)
    result = gpuprov(*args)
    assert result.code == 1, result.both
    assert expected in result.stderr, result.stderr
    assert error_lines(result.stderr) == 1, result.stderr
    assert list(project.out.iterdir()) == []


# -- facts and inventory ---------------------------------------------------------------

def test_facts_prints_json_of_the_local_host(project: Project) -> None:
    result = gpuprov("facts", str(project.inventory), "-l", "h1")
    assert result.code == 0, result.both
    data = json.loads(result.stdout)
    assert list(data) == ["h1"]
    facts = data["h1"]
    assert facts["kernel"] == platform.release()
    assert facts["arch"]["machine"] == platform.machine()
    assert facts["os"]["id"] and facts["os"]["pretty_name"]


def test_inventory_graph_prints_the_group_tree(project: Project) -> None:
    result = gpuprov("inventory", str(project.inventory), "--graph")
    assert result.code == 0, result.both
    assert result.stdout.splitlines()[:6] == [
        "@all:", "  |--@cloud:", "  |  |--h3", "  |--@lab:", "  |  |--h1", "  |  |--h2"]


def test_inventory_yml_in_the_current_directory_is_the_default(project: Project) -> None:
    (project.root / "inventory.yml").write_text(INVENTORY)
    result = gpuprov("inventory", "--list")
    assert result.code == 0, result.both
    assert sorted(json.loads(result.stdout)["_meta"]["hostvars"]) == list(HOSTS)


# -- the embedded default: no inventory means this machine ------------------------------

SYSTEM_PATHS = (Path("/etc/motd"), Path("/etc/chrony"), Path("/etc/chrony.conf"),
                Path("/etc/chrony.d"), Path("/var/lib/gpuprov"), Path("/run/gpuprov"))


def system_snapshot() -> dict[str, Any]:
    """What the bundled base role would change on this machine."""
    state: dict[str, Any] = {}
    for top in SYSTEM_PATHS:
        paths = [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]
        for path in paths:
            if not path.exists():
                state[str(path)] = None
                continue
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            state[str(path)] = (digest, st.st_mode, st.st_mtime_ns)
    return state


@pytest.fixture()
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cwd = tmp_path / "empty"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_no_inventory_lists_this_machine(empty_cwd: Path) -> None:
    listed = gpuprov("inventory", "--list")
    assert listed.code == 0, listed.both
    data = json.loads(listed.stdout)
    assert list(data["_meta"]["hostvars"]) == ["localhost"]
    assert data["ungrouped"]["hosts"] == ["localhost"]
    graph = gpuprov("inventory", "--graph")
    assert "  |  |--localhost" in graph.stdout.splitlines()


def test_no_inventory_apply_without_yes_or_terminal_refuses(empty_cwd: Path,
                                                             tmp_path: Path) -> None:
    # Safety net: should the refusal ever break, this ./roles/base (which the
    # role search path prefers) writes a marker instead of changing this machine.
    marker = tmp_path / "base-ran"
    role = empty_cwd / "roles" / "base"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(textwrap.dedent(f"""\
        from gpuprov.ops.files import file

        def tasks(ctx):
            yield file({str(marker)!r}, "ran\\n", owner={ME!r}, group={MY_GROUP!r})
        """))
    before = system_snapshot()
    result = gpuprov("apply", stdin="y\n")
    assert result.code == 1, result.both
    assert "no inventory: apply would change THIS machine" in result.stderr
    assert "--yes" in result.stderr
    assert error_lines(result.stderr) == 1, result.stderr
    assert not marker.exists()
    assert system_snapshot() == before


def test_no_arguments_drift_check_looks_at_this_machine_read_only(empty_cwd: Path) -> None:
    before = system_snapshot()
    result = gpuprov_process("drift-check", cwd=empty_cwd)
    # 2 where the check already knows apply would fail here (e.g. no kernel
    # headers for this machine's kernel): issue 17 made that 2 (it was 3)
    assert result.code in (0, 2, 3), result.both
    header, first = result.stdout.splitlines()[:2]
    assert header.startswith("drift-check ") and header.endswith(" on 1 host"), header
    assert first.startswith("localhost  ")
    if result.code == 3:
        assert "DRIFT" in first
    if result.code == 2:
        # what was seen before the failure is still reported
        assert "failed: " in first
        assert "an earlier failure in " in result.stdout
    if result.code:
        assert "file /etc/motd" in result.stdout or "chrony" in result.stdout
    else:
        assert "in sync" in first
    last = {0: "1 host: 1 in sync, 0 drifted, 0 failed, 0 unreachable -> exit 0 (in sync)",
            2: "1 host: 0 in sync, 0 drifted, 1 failed, 0 unreachable -> exit 2 (failed)",
            3: "0 failed, 0 unreachable -> exit 3 (drift)"}[result.code]
    assert result.stdout.rstrip().endswith(last)
    assert system_snapshot() == before
    assert list(empty_cwd.iterdir()) == []


# -- role search path: ./roles first, then the bundled roles ------------------------------

def test_roles_in_the_current_directory_override_the_bundled_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    role = work / "roles" / "base"
    role.mkdir(parents=True)
    marker = tmp_path / "marker.txt"
    (role / "tasks.py").write_text(textwrap.dedent(f"""\
        from gpuprov.ops.files import file

        def tasks(ctx):
            yield file({str(marker)!r}, "local base role\\n", owner={ME!r},
                       group={MY_GROUP!r})
        """))
    inventory = tmp_path / "me.yml"
    inventory.write_text("all:\n  hosts:\n    me:\n      ansible_connection: local\n"
                         "      become: false\n")
    # Only the base role: the default playbook's GPU roles must never run here.
    book = tmp_path / "base-only.yml"
    book.write_text("- name: base only\n  hosts: all\n  roles: [base]\n")
    monkeypatch.chdir(work)

    # Look first: had the bundled base role been picked, the real apply below
    # would rewrite /etc/motd; stop here instead.
    looked = gpuprov("apply", str(inventory), "-p", str(book), "--check")
    assert looked.code == 0, looked.both
    assert f"file {marker}" in looked.stdout
    assert "/etc/motd" not in looked.stdout

    applied = gpuprov("apply", str(inventory), "-p", str(book))
    assert applied.code == 0, applied.both
    assert marker.read_text() == "local base role\n"


def test_an_inventory_without_hosts_is_an_error_not_in_sync(tmp_path: Path) -> None:
    (tmp_path / "empty.yml").write_text("all:\n  vars:\n    x: 1\n")
    res = subprocess.run([sys.executable, "-m", "gpuprov.cli", "drift-check", "empty.yml"],
                         cwd=tmp_path, capture_output=True, text=True, check=False,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "has no hosts" in res.stderr and "Traceback" not in res.stderr
