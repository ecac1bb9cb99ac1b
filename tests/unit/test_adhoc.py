"""`gpuprov run PATTERN -- COMMAND`: the command built (quoting, one word as
a shell line), become, results in host order while hosts run in parallel,
secrets masked, the per-host blocks and the exit code; through fake
connectors, and end to end on local hosts (read-only commands)."""

from __future__ import annotations

import os
import pwd
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gpuprov.cli.adhoc import adhoc_exit_code
from gpuprov.command import MASK, Command
from gpuprov.connectors.base import CommandResult, Connector, Session
from gpuprov.engine.adhoc import AdhocResult, adhoc_command, run_adhoc
from gpuprov.engine.connect import ConnectOptions
from gpuprov.engine.executor import ConnectorFactory
from gpuprov.errors import GpuprovError, UnreachableHost
from gpuprov.model.hosts import Host
from gpuprov.output.adhoc import render_block, summary
from tests.unit.cli_runner import gpuprov

ME = pwd.getpwuid(os.getuid()).pw_name


class FakeConnector(Connector):
    """Answers run() from a script: (rc, stdout, stderr), or raises."""

    def __init__(self, host: Host, answer: tuple[int, str, str] | Exception,
                 delay: float = 0.0) -> None:
        super().__init__(host.name)
        self.answer, self.delay = answer, delay
        self.ran: list[tuple[str, bool]] = []
        self.closed = 0

    def connect(self, *, expect_refusal: bool = False) -> None:
        if isinstance(self.answer, UnreachableHost):
            raise self.answer

    def run(self, command: Command | str, *, sudo: bool = False, stdin: object = None,
            timeout: float | None = None) -> CommandResult:
        time.sleep(self.delay)
        self.ran.append((command.shell() if isinstance(command, Command) else command, sudo))
        if isinstance(self.answer, Exception):
            raise self.answer
        rc, out, err = self.answer
        return CommandResult(str(command), rc, out, err)

    def session(self) -> Session:
        return Session("admin")

    def close(self) -> None:
        self.closed += 1


def fleet(answers: dict[str, tuple[int, str, str] | Exception],
          delays: dict[str, float] | None = None
          ) -> tuple[list[Host], dict[str, FakeConnector], ConnectorFactory]:
    hosts = [Host(name, vars={"api_token": "tok-SECRET-1"}) for name in answers]
    made: dict[str, FakeConnector] = {}

    def factory(host: Host, options: ConnectOptions) -> Connector:
        made[host.name] = FakeConnector(host, answers[host.name], (delays or {}).get(host.name, 0))
        return made[host.name]
    return hosts, made, factory


# ---------------------------------------------------------------- the command

def test_several_words_are_a_program_and_its_arguments_each_quoted() -> None:
    assert adhoc_command(["printf", "%s\n", "a b", "$HOME", "x;rm -rf /"]).shell() == \
        "printf '%s\n' 'a b' '$HOME' 'x;rm -rf /'"


def test_one_word_is_a_shell_line_run_by_sh_c() -> None:
    assert adhoc_command(["df -h / | tail -1"]).shell() == "sh -c 'df -h / | tail -1'"
    assert adhoc_command(["it's"]).shell() == "sh -c 'it'\"'\"'s'"


def test_no_command_is_an_error() -> None:
    with pytest.raises(GpuprovError, match="no command given"):
        adhoc_command([])


# ---------------------------------------------------------------- the engine

def test_results_in_host_order_while_hosts_run_in_parallel() -> None:
    hosts, made, factory = fleet({"a": (0, "A\n", ""), "b": (0, "B\n", ""), "c": (0, "C\n", "")},
                                 delays={"a": 0.3, "b": 0.0, "c": 0.15})
    started = time.monotonic()
    results = list(run_adhoc(hosts, Command("hostname"), become=False, forks=3,
                             connect=ConnectOptions(), connector_factory=factory))
    assert time.monotonic() - started < 0.45   # not 0.45 s of them in a row
    assert [r.host for r in results] == ["a", "b", "c"]
    assert [r.stdout for r in results] == ["A\n", "B\n", "C\n"]
    assert all(c.ran == [("hostname", False)] and c.closed == 1 for c in made.values())


def test_become_runs_through_the_connectors_sudo() -> None:
    hosts, made, factory = fleet({"a": (0, "root\n", "")})
    [result] = run_adhoc(hosts, Command("id", "-un"), become=True, forks=1,
                         connect=ConnectOptions(), connector_factory=factory)
    assert made["a"].ran == [("id -un", True)]
    assert result == AdhocResult("a", 0, "root\n", "")


def test_failed_unreachable_and_broken_hosts_each_get_their_result() -> None:
    hosts, made, factory = fleet({
        "ok": (0, "fine\n", ""),
        "bad": (3, "", "no such file\n"),
        "gone": UnreachableHost("gone", "timeout", "no answer within 3s"),
        "odd": GpuprovError("sudo: a password is required"),
        "bug": ValueError("boom"),
    })
    results = {r.host: r for r in run_adhoc(
        hosts, Command("true"), become=False, forks=5, connect=ConnectOptions(),
        connector_factory=factory)}
    assert not results["ok"].failed and results["ok"].rc == 0
    assert results["bad"].failed and results["bad"].rc == 3
    assert results["gone"].unreachable and "no answer" in results["gone"].unreachable
    assert not results["gone"].failed and results["gone"].rc is None
    assert results["odd"].failed and "password is required" in (results["odd"].error or "")
    assert results["bug"].failed and "internal error" in (results["bug"].error or "")
    assert all(c.closed == 1 for c in made.values())


def test_secrets_and_the_become_password_are_masked() -> None:
    hosts, _, factory = fleet({"a": (1, "token tok-SECRET-1\n", "pw hunter2-pw\n")})
    [result] = run_adhoc(hosts, Command("env"), become=True, forks=1,
                         connect=ConnectOptions(become_password="hunter2-pw"),
                         connector_factory=factory)
    assert result.stdout == f"token {MASK}\n" and result.stderr == f"pw {MASK}\n"


# ---------------------------------------------------------------- output, exit code

def test_blocks_like_ansibles() -> None:
    assert render_block(AdhocResult("lab-01", 0, "up 3 days\n", "")) == \
        "lab-01 | rc=0 >>\nup 3 days\n"
    assert render_block(AdhocResult("lab-02", 2, "partial", "ls: cannot access\n")) == \
        "lab-02 | FAILED | rc=2 >>\npartialls: cannot access\n"
    assert render_block(AdhocResult("lab-03", unreachable="lab-03: timeout")) == \
        "lab-03 | UNREACHABLE >>\nlab-03: timeout\n"
    assert render_block(AdhocResult("lab-04", error="sudo needs a password")) == \
        "lab-04 | ERROR >>\nsudo needs a password\n"
    assert render_block(AdhocResult("lab-05", 0, "", "")) == "lab-05 | rc=0 >>\n"


def test_exit_code_and_summary() -> None:
    ok, bad = AdhocResult("a", 0), AdhocResult("b", 1)
    gone, broken = AdhocResult("c", unreachable="x"), AdhocResult("d", error="y")
    assert adhoc_exit_code([ok]) == 0
    assert adhoc_exit_code([ok, gone]) == 4
    assert adhoc_exit_code([ok, bad, gone]) == 2
    assert adhoc_exit_code([broken, gone]) == 2
    assert summary([ok, bad, gone, broken]) == "4 hosts: 1 ok, 2 failed, 1 unreachable"


# ---------------------------------------------------------------- the command line

@pytest.fixture()
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent("""\
        all:
          vars:
            ansible_connection: local
            become: false
            api_token: tok-NEVER-SHOWN
          children:
            lab:
              hosts:
                h1:
                h2:
            cloud:
              hosts:
                h3:
        """))
    return path


def test_cli_runs_on_the_pattern_in_inventory_order(inventory: Path) -> None:
    result = gpuprov("run", "lab", "-i", str(inventory), "--", "id", "-un")
    assert result.code == 0, result.both
    assert result.stdout == f"h1 | rc=0 >>\n{ME}\nh2 | rc=0 >>\n{ME}\n"
    assert "2 hosts: 2 ok, 0 failed, 0 unreachable" in result.stderr


def test_cli_shell_line_failure_and_masking(inventory: Path) -> None:
    result = gpuprov("run", "h3", "-i", str(inventory), "--",
                     "echo $((40 + 2)) tok-NEVER-SHOWN; echo oops >&2; exit 3")
    assert result.code == 2, result.both
    assert result.stdout == f"h3 | FAILED | rc=3 >>\n42 {MASK}\noops\n"


def test_cli_default_inventory_is_inventory_yml(inventory: Path) -> None:
    (inventory.parent / "inventory.yml").write_text(inventory.read_text())
    result = gpuprov("run", "cloud", "--", "true")
    assert result.code == 0, result.both
    assert result.stdout == "h3 | rc=0 >>\n"


def test_cli_without_a_command_or_with_its_options_unquoted(inventory: Path) -> None:
    missing = gpuprov("run", "all", "-i", str(inventory))
    assert missing.code == 1 and "Missing argument 'COMMAND...'" in missing.stderr
    options = gpuprov("run", "all", "-i", str(inventory), "ls", "-la")
    assert options.code == 1
    assert "put the command after --" in options.stderr


def test_cli_unknown_pattern_is_one_error(inventory: Path) -> None:
    result = gpuprov("run", "nope", "-i", str(inventory), "--", "true")
    assert result.code == 1 and result.stdout == ""
    assert "nope" in result.stderr


def test_cli_help_says_no_run_lock() -> None:
    result = gpuprov("run", "--help")
    assert result.code == 0
    assert "No run lock" in result.stdout and "--become" in result.stdout


def test_threads_do_not_leak() -> None:
    before = threading.active_count()
    hosts, _, factory = fleet({"a": (0, "", ""), "b": (0, "", "")})
    list(run_adhoc(hosts, Command("true"), become=False, forks=2, connect=ConnectOptions(),
                   connector_factory=factory))
    assert threading.active_count() == before


def test_cli_without_an_inventory_runs_on_this_machine(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)   # no inventory.yml here
    result = gpuprov("run", "all", "--", "uname", "-s")
    assert result.code == 0, result.both
    assert result.stdout == f"localhost | rc=0 >>\n{os.uname().sysname}\n"


def test_cli_login_options_are_the_other_commands(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # -u/--private-key come from common.connect_options: a missing key is
    # refused before any connection, as for apply
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inventory.yml").write_text(
        "all:\n  hosts:\n    gpu1: {ansible_host: 127.0.0.1, ansible_port: 1}\n")
    result = gpuprov("run", "gpu1", "-u", "ops", "--private-key", str(tmp_path / "nope"),
                     "--", "true")
    assert result.code == 1 and result.stdout == ""
    assert "--private-key" in result.stderr and "does not exist" in result.stderr
