"""A dropped connection ends the remote `cat` with a plain EOF: the write
steps must then leave the target as it was (old or new, never partial)."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from gpuprov.ops.atomic import write_command, write_file_step

NEW = b"new content line\n" * 5000


def run(shell: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", shell], input=stdin, capture_output=True, check=False)


def me() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


@pytest.mark.parametrize("kind", ["file op", "write_file_step"])
def test_truncated_upload_leaves_the_old_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "managed.conf"
    target.write_bytes(b"old\n")
    owner, group = me()
    shell = (write_command(str(target), NEW, owner, group, "0644").shell() if kind == "file op"
             else write_file_step(str(target), NEW).command.shell())
    cut = run(shell, NEW[: len(NEW) // 2])
    assert cut.returncode == 1
    assert b"upload incomplete" in cut.stderr
    assert target.read_bytes() == b"old\n"
    # the temp file is removed by the EXIT trap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["managed.conf"]
    if kind == "write_file_step" and os.geteuid() != 0:
        return  # it chowns to root, which only root may (CI runs as root)
    full = run(shell, NEW)
    assert full.returncode == 0, full.stderr
    assert target.read_bytes() == NEW


def test_temp_file_is_removed_when_stderr_is_gone_too(tmp_path: Path) -> None:
    # A dead controller also closes stderr: the failure message then raises
    # SIGPIPE, and a shell killed by a signal would skip its EXIT trap.
    target = tmp_path / "managed.conf"
    target.write_bytes(b"old\n")
    owner, group = me()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        res = subprocess.run(["sh", "-c", write_command(str(target), NEW, owner, group,
                                                        "0644").shell()],
                             input=NEW[:100], stdout=subprocess.DEVNULL, stderr=write_end,
                             check=False)
    finally:
        os.close(write_end)
    assert res.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["managed.conf"]
    assert target.read_bytes() == b"old\n"


def test_a_secret_is_checked_by_size_and_its_digest_never_appears(tmp_path: Path) -> None:
    from gpuprov.command import Secret
    from gpuprov.facts.base import FactView
    from gpuprov.ops.files import file

    secret = b"hunter2-token\n"
    op = file(str(tmp_path / "token"), Secret(secret.decode()), mode="0600")
    [change] = op.plan(FactView({op.fact: None}))
    shell = change.steps[0].command.shell()
    assert hashlib.sha256(secret).hexdigest() not in shell
    assert hashlib.sha256(secret).hexdigest() not in str(change.to_json())
    assert f"-eq {len(secret)}" in shell
