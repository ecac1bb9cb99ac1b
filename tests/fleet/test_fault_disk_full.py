"""Disk full on the host during a file write (issue 15): a small tmpfs mounted
over a managed directory (inside the host's mount namespace), a file bigger
than it. The task fails naming ENOSPC, the host and the path; the target keeps
its old content and no temp file is left beside it. Once the tmpfs is gone
nothing is lost and the next apply converges."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import assert_nothing_lost, gpuprov, injected
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

DIR = "/srv/fulltest"
TARGET = f"{DIR}/data.txt"
OLD = "old content\n"
BIG = ["-e", "repeat=40000"]   # 40000 lines of 23 bytes: 920 KB into a 256 KiB tmpfs

ROLE = """
from gpuprov.ops.files import file


def tasks(ctx):
    yield file("/srv/fulltest/data.txt", ctx.vars["line"] * int(ctx.vars["repeat"]))
"""


@pytest.fixture(scope="module")
def host(fleet: Fleet) -> FleetHost:
    return next(h for h in fleet.hosts if h.variant == "default")


@pytest.fixture(scope="module")
def work(fleet: Fleet, host: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("diskfull")
    (tmp / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory([host]), sort_keys=False))
    (tmp / "playbooks").mkdir()
    (tmp / "playbooks" / "site.yml").write_text(
        "- name: disk full\n  hosts: all\n  roles: [bigfile]\n")
    role = tmp / "roles" / "bigfile"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text(
        "# one line of the file\nline: \"line of a managed file\\n\"\n"
        "# how many lines\nrepeat: 1\n")
    return tmp


def test_disk_full_during_a_write_leaves_the_old_file_and_no_temp(
        fleet: Fleet, host: FleetHost, work: Path) -> None:
    host.exec(f"rm -rf {DIR} && mkdir -p {DIR}")
    with injected("disk full during a file write"):
        host.exec(f"mount -t tmpfs -o size=256k,mode=0755 gpuprov-fulltest {DIR}")
        try:
            host.write_file(TARGET, OLD)
            run = gpuprov("apply", "inventory.yml", *BIG, cwd=work)
            out = run.stdout + run.stderr
            flat = " ".join(out.split())
            assert run.returncode == 2, out
            # issue 17's recap: the host named once ("failed HOST"), its error below
            assert f"failed {host.name}\n    task 'file {TARGET}' failed" in out, out
            assert (f"no space left on device (ENOSPC) writing {TARGET}; {TARGET} was left "
                    "unchanged and no temp file remains") in flat, out
            assert f"df -h {DIR}" in flat, out
            assert host.read_file(TARGET) == OLD
            assert host.exec(f"ls -A {DIR}").stdout.split() == ["data.txt"]
        finally:
            host.exec(f"umount {DIR}", check=False)
        assert_nothing_lost(fleet, [host], work, *BIG)
        assert len(host.read_file(TARGET) or "") == 40000 * len("line of a managed file\n")
    host.exec(f"rm -rf {DIR}")
