"""ops/armed: the armed-revert transaction as a role-neutral mechanism (here
for a firewall file); tests/unit/test_sshd_lockout.py runs its shell scripts
for real, as the sshd_hardening role sets them up."""

from __future__ import annotations

import re

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


def test_an_unconfirmed_earlier_change_is_confirmed_not_left_to_its_revert() -> None:
    # Issue 15: the files are as wanted, but a killed run never confirmed them;
    # its timer would revert them after this run reported the host in sync.
    check = Step(Command("nft", "-c", "-f", RULES))
    [change] = FIREWALL.confirm_pending(resource="service nftables", action="reload",
                                        doing="check and load the rules", checks=[check],
                                        invalidates=[FileState.at(RULES)])
    assert (change.resource, change.action) == ("service nftables", "reload")
    assert change.summary == ("an earlier firewall change was never confirmed (its run ended "
                              "first): check and load the rules, confirm a NEW login + sudo, "
                              "then cancel its automatic revert")
    assert change.steps == [check, Step(LOAD), Step(Command("true"), new_connection=True),
                            Step(Command.script(FIREWALL.finish_script()))]
    assert change.rollback == FIREWALL.rollback()
    assert change.invalidates == (FileState.at(RULES),)


def test_the_scripts_name_what_is_changed_and_its_own_timer() -> None:
    prepare = FIREWALL.prepare_script([RULES])
    assert prepare.startswith(f"set -e\nd={STATE}\n")
    assert ("systemd-run --quiet --unit=gpuprov-firewall-revert --on-active=60 "
            "--timer-property=AccuracySec=1s ") in prepare
    # an earlier change still saved is undone first (the run lock proves its run ended)
    assert 'if [ -d "$d" ]; then sh "$d/restore"; fi\n' in prepare
    restore = FIREWALL.restore_script([RULES])
    # the files are made live only when every one was put back, and not at boot
    # (the boot hook runs before the services that read them)
    assert (f"put 0 {RULES}\nif [ -n \"$failed\" ]; then\n" in restore
            and f'if [ "$1" != --at-boot ]; then\nnft -f {RULES}\nfi\n' in restore)
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
    (("firewall", "//", "u"), "directory must be an absolute path"),
    (("firewall", "/var/lib/fire wall", "u"), "directory must be an absolute path"),
    (("firewall", "/var/lib/it's", "u"), "directory must be an absolute path"),
])
def test_names_that_would_need_quoting_are_refused(args: tuple[str, str, str],
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArmedRevert(*args, LOAD)


def test_the_boot_hook_is_named_after_the_unit_and_ordered_before_the_services() -> None:
    hooked = ArmedRevert("firewall", STATE, "gpuprov-firewall-revert", LOAD, 60,
                         boot_before=("nftables",))
    assert hooked.boot_name == "gpuprov-firewall-revert-boot"
    assert hooked.boot_hook_paths() == [
        "/etc/systemd/system/multi-user.target.wants/gpuprov-firewall-revert-boot.service",
        "/etc/systemd/system/gpuprov-firewall-revert-boot.service",
        *(f"/etc/rc{n}.d/S00gpuprov-firewall-revert-boot" for n in "2345"),
        "/etc/init.d/gpuprov-firewall-revert-boot"]
    unit = hooked.boot_unit()
    assert "\nBefore=multi-user.target nftables.service\n" in unit
    # systemd would expand $d: every $ is doubled
    assert re.search(r"(?<!\$)\$(?!\$)", unit.split("ExecStart=", 1)[1]) is None
    assert 'exec /bin/sh "$$d/restore" --at-boot' in unit
    init = hooked.boot_init_script()
    assert "# Provides:          gpuprov-firewall-revert-boot\n" in init
    assert "# X-Start-Before:    nftables\n" in init
    # installed with the save (before it is in place), removed with it
    prepare = hooked.prepare_script([RULES])
    assert prepare.index("GPUPROV_BOOT") < prepare.index('mv "$n" "$d"')
    remove = "rm -f " + " ".join(hooked.boot_hook_paths()) + "\n"
    assert remove in hooked.finish_script() and remove in hooked.restore_script([RULES])
    assert remove.strip() + "'\n" in unit and remove in init
    with pytest.raises(ValueError, match="boot_before must be plain words"):
        ArmedRevert("firewall", STATE, "u", LOAD, boot_before=("a b",))
