"""ops/armed: the armed-revert transaction as a role-neutral mechanism (here
for a firewall file); tests/unit/test_sshd_lockout.py runs its shell scripts
for real, as the sshd_hardening role sets them up."""

from __future__ import annotations

import pytest

from gpuprov.command import Command
from gpuprov.facts.files import FileState
from gpuprov.ops.armed import ArmedRevert
from gpuprov.ops.base import Change, Step

RULES = "/etc/nftables.conf"
LOAD = Command("nft", "-f", RULES)
STATE = "/var/lib/gpuprov/firewall-rollback"
FIREWALL = ArmedRevert("firewall", STATE, "gpuprov-firewall-revert", LOAD, 60)


def write_rules() -> Change:
    return Change(f"file {RULES}", "update", "update the rules",
                  steps=[Step(Command("install", "-m", "0644", "/tmp/new", RULES))])


def test_a_transaction_arms_first_rolls_back_everywhere_and_confirms_last() -> None:
    check = Step(Command("nft", "-c", "-f", RULES))
    changes = FIREWALL.transaction([write_rules()], [RULES], resource="service nftables",
                                   action="reload", doing="check and load the rules",
                                   checks=[check])
    first, final = changes
    assert first.steps[0] == Step(Command.script(FIREWALL.prepare_script([RULES])))
    assert first.steps[1].command.shell() == f"install -m 0644 /tmp/new {RULES}"
    rollback = [Step(Command.script(f"[ ! -f {STATE}/restore ] || sh {STATE}/restore"))]
    assert first.rollback == final.rollback == rollback
    assert (final.resource, final.action) == ("service nftables", "reload")
    assert final.summary == ("check and load the rules, confirm a NEW login + sudo, then "
                             "cancel the automatic revert (armed: 60s)")
    assert final.steps == [check, Step(LOAD), Step(Command("true"), new_connection=True),
                           Step(Command.script(FIREWALL.finish_script()))]
    assert final.invalidates == (FileState.at(RULES),)
    assert FIREWALL.transaction([], [RULES], resource="r", action="a", doing="d") == []


def test_the_scripts_name_what_is_changed_and_its_own_timer() -> None:
    prepare = FIREWALL.prepare_script([RULES])
    assert prepare.startswith(f"set -e\nd={STATE}\n")
    assert ("systemd-run --quiet --unit=gpuprov-firewall-revert --on-active=60 "
            "--timer-property=AccuracySec=1s ") in prepare
    assert "an earlier firewall change is still waiting" in prepare
    restore = FIREWALL.restore_script([RULES])
    assert f"put 0 {RULES}\nnft -f {RULES}\n" in restore
    assert 'logger -t gpuprov "firewall: previous config restored"' in restore
    # what sets the delay: seconds by default, or the setting a person can change
    assert "confirming took longer than 60s" in FIREWALL.finish_script()
    named = ArmedRevert("firewall", STATE, "gpuprov-firewall-revert", LOAD, 60,
                        revert_after_setting="firewall_revert_after")
    assert "confirming took longer than firewall_revert_after" in named.finish_script()


@pytest.mark.parametrize(("args", "message"), [
    (("fire wall", STATE, "u"), "what must be a plain word"),
    (("firewall", STATE, "u;reboot"), "unit must be a plain word"),
    (("firewall", "state", "u"), "directory must be an absolute path"),
    (("firewall", "/", "u"), "directory must be an absolute path"),
])
def test_names_that_would_need_quoting_are_refused(args: tuple[str, str, str],
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArmedRevert(*args, LOAD)
