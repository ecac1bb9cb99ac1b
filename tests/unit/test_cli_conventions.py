"""Ansible's and pyinfra's command-line conventions in gpuprov (-i, -C, -D,
-u, --private-key, -k, --list-hosts/--list-tasks/--list-tags/--syntax-check,
inventory --host/--list/--graph, --version, completion, the group help) and
the bad inputs each answered with one error naming the file (and line), exit 1,
no traceback (cli_runner asserts that one for every run)."""

from __future__ import annotations

import json
import os
import platform
import re
import textwrap
from pathlib import Path

import paramiko
import pytest

from gpuprov.cli.common import load_target
from tests.unit.cli_runner import Outcome, gpuprov
from tests.unit.test_cli import (
    HOSTS,
    Project,
    closed_port,
    error_lines,
    make_project,
    snapshot,
)

REPO = Path(__file__).resolve().parents[2]
CONNECTING = ("apply", "drift-check", "verify", "facts")


@pytest.fixture(name="project")
def project_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """test_cli's project: the greet role, site.yml, hosts.yml (three local hosts)."""
    return make_project(tmp_path, monkeypatch)


def one_error(result: Outcome, *expected: str) -> str:
    """Exit 1 with exactly one error line (its hint may follow) holding `expected`."""
    assert result.code == 1, result.both
    assert error_lines(result.stderr) == 1, result.stderr
    line = next(ln for ln in result.stderr.splitlines() if ln.lower().startswith("error"))
    for text in expected:
        assert text in result.stderr, result.stderr
    return line


def ssh_inventory(root: Path, key: str | None = None) -> Path:
    """One SSH host on a closed loopback port (reaching it would fail)."""
    path = root / "ssh.yml"
    key_line = f"\n      ssh_private_key_file: {key}" if key else ""
    path.write_text(textwrap.dedent(f"""\
        all:
          hosts:
            far:
              ansible_host: 127.0.0.1
              ansible_port: {closed_port()}
              ssh_known_hosts_file: {root / 'known_hosts'}""") + key_line + "\n")
    return path


# -- -i, -C, -D ---------------------------------------------------------------------

def test_dash_i_is_the_inventory_argument(project: Project) -> None:
    by_option = gpuprov("inventory", "-i", str(project.inventory), "--list")
    by_argument = gpuprov("inventory", str(project.inventory), "--list")
    both_same = gpuprov("inventory", str(project.inventory), "-i", str(project.inventory),
                        "--list")
    assert by_option.code == by_argument.code == both_same.code == 0, by_option.both
    assert by_option.stdout == by_argument.stdout == both_same.stdout
    checked = gpuprov("apply", "-i", str(project.inventory), "-p", str(project.playbook), "-C")
    assert checked.code == 0, checked.both


@pytest.mark.parametrize("command", ["apply", "drift-check", "verify", "facts", "inventory"])
def test_two_different_inventories_are_a_usage_error(project: Project, command: str) -> None:
    result = gpuprov(command, "one.yml", "-i", "other.yml",
                     *(["--list"] if command == "inventory" else []))
    one_error(result, "two inventories: one.yml (argument) and -i other.yml")


def test_dash_c_checks_and_dash_d_shows_diffs(project: Project) -> None:
    before = snapshot(project.root)
    checked = project.run("apply", "-C", "-D")
    assert checked.code == 0, checked.both
    assert not any(project.file(h).exists() for h in HOSTS)
    assert snapshot(project.root) == before
    assert "+hello" in checked.stdout


def test_drift_check_dash_d_prints_the_diff_of_a_drifted_file(project: Project) -> None:
    assert project.run("apply").code == 0
    project.file("h2").write_text("tampered\n")
    drift = project.run("drift-check", "-D")
    assert drift.code == 3, drift.both
    assert "-tampered" in drift.stdout and "+hello" in drift.stdout
    as_json = project.run("drift-check", "-D", "--format", "json")
    assert as_json.code == 3 and json.loads(as_json.stdout)   # the diff kept out of the JSON
    assert "-tampered" in as_json.stderr


# -- -u, --private-key, -k, -K, -T everywhere -----------------------------------------

@pytest.mark.parametrize("command", CONNECTING)
def test_every_connecting_command_takes_the_login_options_with_help(command: str) -> None:
    result = gpuprov(command, "--help")
    assert result.code == 0
    text = " ".join(result.stdout.split())
    for option, help_text in [("-i, --inventory INVENTORY", "The inventory file"),
                              ("-u, --user USER", "Log in as USER on every host"),
                              ("--private-key FILE", "Log in with this private key"),
                              ("-k, --ask-pass", "Ask once for the SSH login password"),
                              ("-K, --ask-become-pass", "Ask once for the sudo password"),
                              ("-T, --timeout", "Seconds to wait for a host"),
                              ("--strict-host-keys", "Refuse unknown host keys"),
                              ("--accept-new-host-keys", "Record the key of a host")]:
        assert f"{option} {help_text}" in text or (option in text and help_text in text), \
            (option, text)


def test_onboard_takes_timeout_inventory_and_new_group() -> None:
    text = " ".join(gpuprov("onboard", "--help").stdout.split())
    for option in ("-i, --inventory INVENTORY", "-T, --timeout", "--new-group",
                   "-k, --ask-pass", "-K, --ask-become-pass"):
        assert option in text, option


def test_user_and_private_key_override_every_host(project: Project, tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    key.write_text("not checked here, only its presence\n")
    inventory = ssh_inventory(tmp_path, key="/nonexistent/inventory_key")
    target = load_target(str(inventory), None, None, need_plays=False,
                         login={"user": "bob", "private_key": str(key)})
    host = target.inventory.hosts["far"]
    assert (host.ssh_user, host.ssh_private_key_file) == ("bob", str(key))
    assert target.hosts[0] is host   # the executor picks hosts from the inventory


def test_ask_pass_prompts_once_for_the_login_password(project: Project) -> None:
    result = gpuprov("apply", str(project.inventory), "-p", str(project.playbook), "-C", "-k",
                     stdin="hunter2\n")
    assert result.code == 0, result.both
    assert result.stderr.count("SSH password") == 1
    assert "hunter2" not in result.both


def test_a_missing_private_key_option_is_refused_before_connecting(tmp_path: Path) -> None:
    inventory = ssh_inventory(tmp_path)
    for command in CONNECTING:
        result = gpuprov(command, str(inventory), "--private-key", str(tmp_path / "nokey"))
        one_error(result, f"--private-key {tmp_path / 'nokey'}: the key file does not exist",
                  "hint:")


def test_a_missing_key_in_the_inventory_names_the_host_and_line(tmp_path: Path) -> None:
    inventory = ssh_inventory(tmp_path, key="~/.ssh/gpuprov-test-no-such-key")
    for command in CONNECTING:
        result = gpuprov(command, str(inventory))
        one_error(result, f"{inventory}:7: far: ssh_private_key_file "
                  "~/.ssh/gpuprov-test-no-such-key: the key file does not exist")
    # reading the inventory connects to nothing: no key needed
    assert gpuprov("inventory", str(inventory), "--list").code == 0


def test_a_key_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    result = gpuprov("verify", str(ssh_inventory(tmp_path, key=str(tmp_path))))
    one_error(result, "far: ssh_private_key_file", "the key file is not a file")


def test_an_unreadable_key_file_is_refused(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "id_locked"
    key.write_text("x")
    key.chmod(0)
    # root (CI) reads any file: os.access answers as an unprivileged user would
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                        if str(path) == str(key) else real_access(path, mode, **kw))
    result = gpuprov("facts", str(ssh_inventory(tmp_path, key=str(key))))
    one_error(result, "far: ssh_private_key_file", "the key file is not readable")


# -- --list-hosts, --list-tasks, --list-tags, --syntax-check --------------------------

@pytest.mark.parametrize("command", ["apply", "drift-check"])
def test_listings_connect_to_nothing(project: Project, command: str) -> None:
    before = snapshot(project.root)
    hosts = project.run(command, "--list-hosts", "-l", "lab")
    assert hosts.code == 0, hosts.both
    assert "  play #1 (all): greet everyone" in hosts.stdout
    assert "    hosts (2):\n      h1\n      h2\n" in hosts.stdout
    tasks = project.run(command, "--list-tasks")
    assert tasks.code == 0, tasks.both
    assert re.search(r"roles:\n +greet\tTAGS: \[greet, hello\]\n +one file per host", tasks.stdout)
    skipped = project.run(command, "--list-tasks", "--skip-tags", "hello")
    assert skipped.stdout.endswith("    roles:\n"), skipped.stdout
    tags = project.run(command, "--list-tags")
    assert "TASK TAGS: [greet, hello]" in tags.stdout
    assert snapshot(project.root) == before


def test_list_hosts_needs_no_reachable_host_nor_key(tmp_path: Path,
                                                    project: Project) -> None:
    inventory = ssh_inventory(tmp_path, key="/nonexistent/key")
    result = gpuprov("apply", str(inventory), "-p", str(project.playbook), "--list-hosts")
    assert result.code == 0, result.both
    assert "      far\n" in result.stdout


@pytest.mark.parametrize("command", ["apply", "drift-check"])
def test_syntax_check_ok(project: Project, command: str) -> None:
    result = project.run(command, "--syntax-check")
    assert result.code == 0, result.both
    assert result.stdout == (f"syntax ok: {project.inventory}, {project.playbook} "
                             "(1 play, 1 role)\n")


@pytest.mark.parametrize(("name", "text", "where"), [
    ("site.yml", "- hosts: all\n  roles: [greet]\n  gather_facts: false\n", "site.yml:3:"),
    ("hosts.yml", "all:\n  hosts:\n    h1:\n  hosts:\n", "hosts.yml:4:"),
    ("roles/greet/defaults.yml", "greeting: [\n", "defaults.yml:2:"),
    ("roles/greet/tasks.py", "def tasks(ctx):\n    yield (\n", "tasks.py:2"),
])
def test_syntax_check_names_file_and_line(project: Project, name: str, text: str,
                                          where: str) -> None:
    (project.root / name).write_text(text)
    result = project.run("drift-check", "--syntax-check")
    one_error(result, where)


# -- gpuprov inventory --------------------------------------------------------------

def test_inventory_host_prints_merged_vars_masked(project: Project) -> None:
    project.inventory.write_text(project.inventory.read_text().replace(
        "        h1:\n", "        h1:\n          api_token: s3cret-value\n          port: 2\n"))
    result = gpuprov("inventory", str(project.inventory), "--host", "h1")
    assert result.code == 0, result.both
    assert json.loads(result.stdout) == {"ansible_connection": "local", "become": False,
                                         "api_token": "********", "port": 2}
    one_error(gpuprov("inventory", str(project.inventory), "--host", "h4"),
              "no host 'h4'", "did you mean")


def test_inventory_list_is_ansible_inventorys_shape(project: Project) -> None:
    data = json.loads(gpuprov("inventory", str(project.inventory), "--list").stdout)
    assert data["all"] == {"children": ["ungrouped", "lab", "cloud"]} or \
        data["all"] == {"children": ["lab", "cloud"]}
    assert data["lab"] == {"hosts": ["h1", "h2"]} and data["cloud"] == {"hosts": ["h3"]}
    assert sorted(data["_meta"]["hostvars"]) == list(HOSTS)
    exported = json.loads(gpuprov("inventory", str(project.inventory), "--list",
                                  "--export").stdout)
    assert exported["all"]["vars"] == {"ansible_connection": "local", "become": False}


def test_inventory_limit_is_honoured_by_list_and_graph(project: Project) -> None:
    listed = json.loads(gpuprov("inventory", str(project.inventory), "--list", "-l",
                                "h3").stdout)
    assert list(listed["_meta"]["hostvars"]) == ["h3"]
    assert listed["all"] == {"children": ["cloud"]} and listed["cloud"] == {"hosts": ["h3"]}
    assert "lab" not in listed
    graph = gpuprov("inventory", str(project.inventory), "--graph", "-l", "h1")
    assert graph.stdout == "@all:\n  |--@lab:\n  |  |--h1\n"


@pytest.mark.parametrize("flags", [("--list", "--graph"), ("--graph", "--host", "h1"), ()])
def test_inventory_takes_exactly_one_of_list_graph_host(project: Project,
                                                        flags: tuple[str, ...]) -> None:
    result = gpuprov("inventory", str(project.inventory), *flags)
    one_error(result, "pass exactly one of --list, --graph, --host NAME")


# -- bad inputs -----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["apply", "drift-check", "inventory"])
def test_a_playbook_given_as_the_inventory_gets_a_hint(project: Project, command: str) -> None:
    result = gpuprov(command, "site.yml", *(["--list"] if command == "inventory" else []))
    line = one_error(result)
    assert line == "error: site.yml looks like a playbook, not an inventory: did you mean " \
        "-p site.yml?"


def test_one_play_mapping_is_a_playbook_too(project: Project) -> None:
    Path("play.yml").write_text("hosts: all\nroles: [greet]\n")
    one_error(gpuprov("apply", "play.yml"), "did you mean -p play.yml?")


@pytest.mark.parametrize(("data", "what", "line", "offset"), [
    (b"all:\n  hosts:\n    h\xe9:\n", "byte 0xe9, not UTF-8", 3, 19),
    (b"\x7fELF\x02\x01\x01\x00\x00", "a NUL byte", 1, 7),
])
def test_a_binary_inventory_names_line_and_offset(project: Project, data: bytes, what: str,
                                                  line: int, offset: int) -> None:
    Path("bin.yml").write_bytes(data)
    result = gpuprov("inventory", "bin.yml", "--list")
    error = one_error(result, "hint: is this the right file?")
    assert error == f"error: bin.yml:{line}: not a text file: {what} at byte offset {offset}"


def test_a_binary_playbook_and_vars_file_are_named(project: Project) -> None:
    Path("book.yml").write_bytes(b"- hosts: all\n  roles: [\xff]\n")
    one_error(gpuprov("apply", str(project.inventory), "-p", "book.yml", "-C"),
              "book.yml:2: not a text file: byte 0xff")
    Path("vars.yml").write_bytes(b"a: 1\n\x00\n")
    one_error(project.run("apply", "-C", "-e", "@vars.yml"),
              "vars.yml:2: not a text file: a NUL byte at byte offset 5")


def test_onboard_refuses_an_unknown_group_unless_new_group(project: Project) -> None:
    typo = gpuprov("onboard", "ws-9", str(project.inventory), "--group", "lba", "--dry-run")
    one_error(typo, f"{project.inventory}: no group 'lba'", "did you mean 'lab'?",
              "pass --new-group to create 'lba'")
    assert "h1" in project.inventory.read_text()   # untouched
    other = gpuprov("onboard", "ws-9", "-i", str(project.inventory), "--group", "gpu",
                    "--dry-run")
    one_error(other, "no group 'gpu'", "--new-group")
    new = gpuprov("onboard", "ws-9", str(project.inventory), "--group", "gpu", "--new-group",
                  "--dry-run")
    assert new.code == 0, new.both
    known = gpuprov("onboard", "ws-9", str(project.inventory), "--group", "lab", "--dry-run")
    assert known.code == 0, known.both


def test_example_inventorys_placeholder_hash_and_jupyter_url_agree(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = gpuprov("jupyter-url", "ws-01.lab", "inventory.example.yml")
    line = one_error(result, "is the example inventory's placeholder (REPLACE_ME)")
    assert line.startswith("error: inventory.example.yml:")
    command = result.stderr.split("hint: make one with: ")[1].strip()
    example = (REPO / "inventory.example.yml").read_text()
    assert command in example and "REPLACE_ME" in example
    assert "must start with 'argon2:'" not in result.stderr   # it does start so
    assert gpuprov("jupyter-url", "-i", "inventory.example.yml", "gpu-vm-a.example.com").code == 0


# -- the group: help, --version, completion -----------------------------------------------

def test_group_help_shows_every_description_whole() -> None:
    from gpuprov.cli.app import cli, first_paragraph

    result = gpuprov("--help")
    assert result.code == 0
    text = " ".join(result.stdout.split())
    ctx_commands = {name: cli.get_command(None, name)  # type: ignore[arg-type]
                    for name in cli.list_commands(None)}  # type: ignore[arg-type]
    assert {"apply", "drift-check", "verify", "inventory", "onboard"} <= set(ctx_commands)
    for name, command in ctx_commands.items():
        assert command is not None
        assert f"{name} {first_paragraph(command.help or '')}" in text, name
    # click's cut marks a description it shortened
    assert not any(ln.endswith("...") for ln in result.stdout.splitlines()[1:]), result.stdout


def test_version_names_gpuprov_python_and_paramiko() -> None:
    result = gpuprov("--version")
    assert result.code == 0
    assert re.fullmatch(rf"gpuprov \S+ \(Python {re.escape(platform.python_version())}, "
                        rf"paramiko {re.escape(paramiko.__version__)}\)\n", result.stdout)


def test_shell_completion_script_and_readme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_GPUPROV_COMPLETE", "bash_source")
    result = gpuprov()
    assert result.code == 0
    assert "_gpuprov_completion()" in result.stdout
    assert "complete -o nosort -F _gpuprov_completion gpuprov" in result.stdout
    readme = (REPO / "README.md").read_text()
    assert 'eval "$(_GPUPROV_COMPLETE=bash_source gpuprov)"' in readme
