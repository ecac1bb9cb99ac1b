"""command(): guards are facts, so check mode knows whether it would run."""

from __future__ import annotations

import subprocess

from gpuprov.command import Command
from gpuprov.facts.base import FactView, gather_script, parse_batch
from gpuprov.facts.services import ServiceState
from gpuprov.facts.system import PathExists, RootShellTest, ShellTest
from gpuprov.ops.atomic import write_file_step
from gpuprov.ops.command import command
from tests.unit.shell_helpers import without_upload_check


def plan(op, **answers):
    """answers: fact key fragment -> value, e.g. creates=True."""
    values = {}
    for fact in op.facts():
        if isinstance(fact, PathExists):
            values[fact] = answers["creates" if fact.path == op.creates else "removes"]
        elif fact is op.unless_test or fact == op.unless_test:
            values[fact] = answers["unless"]
        else:
            values[fact] = answers["only_if"]
    return op.plan(FactView(values))


def test_no_guard_always_runs() -> None:
    op = command("update-initramfs -u")
    assert op.facts() == []
    [c] = plan(op)
    assert (c.resource, c.action, c.summary) == (
        "command update-initramfs -u", "run", "run update-initramfs -u")
    assert c.steps[0].command.shell() == "update-initramfs -u" and c.steps[0].sudo
    assert c.invalidates is None


def test_creates() -> None:
    op = command(Command("nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"),
                 creates="/etc/cdi/nvidia.yaml")
    assert op.facts() == [PathExists("/etc/cdi/nvidia.yaml")]
    assert plan(op, creates=True) == []
    [c] = plan(op, creates=False)
    assert c.summary == ("run nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml "
                         "(/etc/cdi/nvidia.yaml is absent)")
    assert op.skip_reason(FactView({PathExists("/etc/cdi/nvidia.yaml"): True})) == (
        "/etc/cdi/nvidia.yaml exists")


def test_removes() -> None:
    op = command("rm -f /etc/modprobe.d/old-nvidia.conf",
                 removes="/etc/modprobe.d/old-nvidia.conf")
    assert plan(op, removes=False) == []
    assert len(plan(op, removes=True)) == 1


def test_unless_and_only_if() -> None:
    op = command("dracut --force", unless="lsinitrd | grep -q nouveau",
                 only_if="test -x /usr/bin/dracut")
    assert op.facts() == [ShellTest("lsinitrd | grep -q nouveau"),
                          ShellTest("test -x /usr/bin/dracut")]
    assert plan(op, unless=True, only_if=True) == []
    assert plan(op, unless=False, only_if=False) == []
    [c] = plan(op, unless=False, only_if=True)
    assert c.summary == "run dracut --force (unless-test failed, only_if-test succeeded)"
    root = command("true", unless="grep -q x /etc/shadow", guard_sudo=True)
    assert root.facts() == [RootShellTest("grep -q x /etc/shadow")]
    assert root.facts()[0].sudo


def test_guards_gathered_here() -> None:
    """The guard facts through the real gather script on this machine."""
    op = command("echo hi", creates="/etc/os-release", unless="exit 1", only_if="true")
    facts = list(op.facts())
    script, marker = gather_script(facts)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True).stdout
    view = FactView(parse_batch(facts, out, marker))
    assert op.skip_reason(view) == "/etc/os-release exists"
    op2 = command("echo hi", creates="/no/such/file", unless="exit 1", only_if="true")
    facts2 = list(op2.facts())
    script, marker = gather_script(facts2)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert len(op2.plan(FactView(parse_batch(facts2, out, marker)))) == 1


def test_options_pass_through() -> None:
    op = command("systemctl daemon-reload", sudo=True, name="daemon-reload",
                 invalidates=(ServiceState,), notify=("restart docker",), ok_codes=(3,))
    [c] = plan(op)
    assert c.resource == "command daemon-reload"
    assert c.invalidates == (ServiceState,) and c.notify == ("restart docker",)
    assert c.steps[0].ok_codes == (3,)


def test_write_file_step() -> None:
    step = write_file_step("/etc/apt/preferences.d/x y", b"data", mode="0600")
    assert without_upload_check(step.command.shell()) == (
        "mkdir -p /etc/apt/preferences.d && t= && trap 'rm -f \"$t\"' EXIT && "
        "trap 'exit 143' HUP INT TERM PIPE && "
        "t=$(mktemp -u /etc/apt/preferences.d/.gpuprov-XXXXXX) "
        "&& (umask 077 && set -C && : >\"$t\") "
        "&& cat >\"$t\" && "
        "chown -h root:root \"$t\" && chmod 0600 \"$t\" && "
        "mv -fT \"$t\" '/etc/apt/preferences.d/x y' && trap - EXIT")
    assert step.stdin == b"data"
