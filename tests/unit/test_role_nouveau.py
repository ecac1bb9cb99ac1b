"""Role nouveau against canned facts: the blacklist file, the initramfs
handler, and a reboot only while nouveau is loaded."""

from __future__ import annotations

import pytest

from gpuprov.facts.files import FileState
from gpuprov.facts.system import ModuleLoaded
from gpuprov.ops.files import File
from tests.unit.role_facts import ALL_DISTROS, commands, file_info, write_cmd
from tests.unit.role_harness import MissingFacts, plan_role, system_for

BLACKLIST = "/etc/modprobe.d/blacklist-nouveau.conf"
CONTENT = ("# Managed by gpuprov (role nouveau): local edits are overwritten.\n"
           "# nouveau grabs the GPU and conflicts with the NVIDIA driver.\n"
           "blacklist nouveau\n"
           "options nouveau modeset=0\n")


def facts(loaded: bool, current: str | bytes | None = None) -> dict:
    return {ModuleLoaded("nouveau"): loaded,
            FileState(BLACKLIST): None if current is None else file_info(current)}


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_fresh_host_writes_the_blacklist_and_notifies_initramfs(distro: str) -> None:
    plan = plan_role("nouveau", system_for(distro), facts(loaded=False))
    assert plan.labels == [f"file {BLACKLIST}"]
    [change] = plan.changes
    assert (change.resource, change.action) == (f"file {BLACKLIST}", "create")
    assert change.summary == f"create ({len(CONTENT)} bytes, root:root 0644)"
    assert change.notify == ("rebuild initramfs",)
    assert change.reboot_required is False
    assert commands(plan) == [write_cmd(BLACKLIST)]
    assert change.steps[0].stdin == CONTENT.encode()
    assert (change.diff.before, change.diff.after) == (None, CONTENT)


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_reboot_only_when_nouveau_is_loaded(distro: str) -> None:
    plan = plan_role("nouveau", system_for(distro), facts(loaded=True))
    [change] = plan.changes
    assert change.reboot_required is True
    assert change.summary == (f"create ({len(CONTENT)} bytes, root:root 0644) (reboot needed: "
                              "nouveau is loaded and holds the GPU until then)")
    assert change.notify == ("rebuild initramfs",)
    assert commands(plan) == [write_cmd(BLACKLIST)]


@pytest.mark.parametrize("distro", ALL_DISTROS)
@pytest.mark.parametrize("loaded", [False, True])
def test_converged_host_has_no_change(distro: str, loaded: bool) -> None:
    # the file is right: nothing to write, no initramfs, and no new reboot request
    plan = plan_role("nouveau", system_for(distro), facts(loaded, CONTENT))
    assert plan.changes == [] and plan.commands == []


def test_edited_file_is_restored_with_a_diff() -> None:
    edited = CONTENT.replace("options nouveau modeset=0\n", "")
    plan = plan_role("nouveau", system_for("ubuntu2404"), facts(False, edited))
    [change] = plan.changes
    assert (change.action, change.summary) == ("update", "update content")
    assert change.diff.unified() == (
        f"--- {BLACKLIST}\n+++ {BLACKLIST}\n@@ -1,3 +1,4 @@\n"
        " # Managed by gpuprov (role nouveau): local edits are overwritten.\n"
        " # nouveau grabs the GPU and conflicts with the NVIDIA driver.\n"
        " blacklist nouveau\n+options nouveau modeset=0\n")
    assert change.notify == ("rebuild initramfs",) and change.reboot_required is False


def test_wrong_mode_is_fixed_without_rewriting() -> None:
    plan = plan_role("nouveau", system_for("debian12"),
                     {ModuleLoaded("nouveau"): False,
                      FileState(BLACKLIST): file_info(CONTENT, mode="0600")})
    assert commands(plan) == [f"chmod 0644 -- {BLACKLIST}"]
    assert plan.changes[0].notify == ("rebuild initramfs",)


def test_blacklist_false_leaves_the_host_alone() -> None:
    # no op, and not even the ModuleLoaded fact is asked for
    plan = plan_role("nouveau", system_for("ubuntu2204"), {},
                     vars={"nouveau_blacklist": False})
    assert plan.ops == [] and plan.skipped == "nouveau_blacklist is false"


def test_asks_for_module_and_file_facts() -> None:
    with pytest.raises(MissingFacts, match=r"ModuleLoaded\('nouveau'\)"):
        plan_role("nouveau", system_for("ubuntu2204"), {})
    plan = plan_role("nouveau", system_for("rhel9"), facts(False))
    [planned] = plan.ops
    assert isinstance(planned.op, File)
    # readable without sudo: /etc/modprobe.d is world-readable
    assert planned.op.facts() == [FileState(BLACKLIST)]


@pytest.mark.parametrize(("distro", "expected"), [
    ("ubuntu2204", "update-initramfs -u"),
    ("ubuntu2404", "update-initramfs -u"),
    ("debian12", "update-initramfs -u"),
    ("rhel9", "dracut --force"),
])
def test_rebuild_initramfs_handler(distro: str, expected: str) -> None:
    plan = plan_role("nouveau", system_for(distro), {}, handler="rebuild initramfs")
    assert plan.commands == [expected]
    [change] = plan.changes
    assert change.resource == f"command {expected} (rebuild initramfs)"
    assert change.action == "run"
    assert change.steps[0].sudo is True
