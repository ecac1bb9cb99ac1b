"""A file write the filesystem refuses (disk full, over quota, read-only) is
explained with its errno, the path, and what the failure left behind
(ops/atomic.py write_failure); every write step carries that explanation."""

from __future__ import annotations

import pytest

from gpuprov.facts.base import FactView
from gpuprov.ops.atomic import write_failure, write_file_step
from gpuprov.ops.base import Failure
from gpuprov.ops.files import file

# what GNU cat prints when the temp file's filesystem is full (captured on a fleet
# host, a 64k tmpfs over the managed directory)
ENOSPC = "cat: write error: No space left on device\n"


def test_disk_full_names_enospc_the_path_and_what_is_left() -> None:
    got = write_failure("/srv/data/big.bin")(Failure(1, "", ENOSPC))
    assert got is not None
    assert got.reason == ("no space left on device (ENOSPC) writing /srv/data/big.bin; "
                          "/srv/data/big.bin was left unchanged and no temp file remains")
    assert got.hint == ("free space on the filesystem of /srv/data (`df -h /srv/data` on the "
                        "host), then run again")


@pytest.mark.parametrize(("stderr", "errno_name", "hint"), [
    ("cat: write error: Disk quota exceeded", "EDQUOT", "free space"),
    ("mktemp: failed to create file via template '/etc/x/.gpuprov-XXXXXX': "
     "Read-only file system", "EROFS", "remount it read-write"),
])
def test_other_refusals(stderr: str, errno_name: str, hint: str) -> None:
    got = write_failure("/etc/x/conf")(Failure(1, "", stderr))
    assert got is not None and f"({errno_name}) writing /etc/x/conf" in got.reason
    assert got.hint is not None and hint in got.hint


def test_other_failures_are_left_as_they_are() -> None:
    assert write_failure("/etc/x")(Failure(1, "", "gpuprov: validation failed")) is None


def test_every_write_step_is_explained() -> None:
    op = file("/srv/data/big.bin", "x" * 10)
    [change] = op.plan(FactView({op.fact: None}))
    [step] = change.steps
    assert step.explain is not None and step.explain(Failure(1, "", ENOSPC)) is not None
    assert write_file_step("/etc/apt/sources.list.d/a.list", b"deb x\n").explain is not None

