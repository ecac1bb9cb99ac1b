"""Issue 14, file hygiene, run in a local shell: a symlink planted where
gpuprov writes never makes chown/chmod/write touch the file it points to,
and a write is refused when someone other than root (or the runner) controls
a directory on the path. Most need root (to hand a directory to another
user, as on a real host); they skip otherwise.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from gpuprov.facts.base import FactView
from gpuprov.facts.files import FileInfo
from gpuprov.model.inventory_edit import replace_with_backup
from gpuprov.ops.atomic import not_symlink, safe_dirs_check
from gpuprov.ops.base import Step
from gpuprov.ops.file_plan import attrs_command
from gpuprov.ops.files import directory, file

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="hands directories to another user: needs root")


def nobody() -> tuple[int, int]:
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def sh(command, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    text = command.shell() if hasattr(command, "shell") else command
    return subprocess.run(["/bin/sh", "-c", text], input=stdin, capture_output=True)


def run(step: Step) -> subprocess.CompletedProcess:
    return sh(step.command, step.stdin)


def snapshot(path: Path) -> tuple[int, int, int, bytes]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), path.read_bytes()


def fileinfo(**kw) -> FileInfo:
    base = dict(type="file", owner="root", group="root", uid=0, gid=0, mode="0644",
                size=0, sha256=None, content=None, link_target=None)
    base.update(kw)
    return FileInfo(**base)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the managed directory that a planted symlink points to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "shadow"
    target.write_bytes(b"secret\n")
    target.chmod(0o600)
    return target


# ---------------------------------------------------------------- the guards alone

def test_safe_dirs_check_accepts_a_root_only_path(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir(mode=0o755)
    result = sh(safe_dirs_check(str(tmp_path / "etc" / "x.conf")))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_safe_dirs_check_refuses_a_parent_others_can_write(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(mode)
    result = sh(safe_dirs_check(str(d / "x.conf")))
    assert result.returncode == 1
    assert f"{d} is writable by others (mode {oct(mode)[2:]})" in result.stderr.decode()


def test_safe_dirs_check_accepts_a_sticky_directory_above_the_parent(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    (tmp / "mine").mkdir(mode=0o755)
    assert sh(safe_dirs_check(str(tmp / "mine" / "f"))).returncode == 0


@needs_root
def test_safe_dirs_check_refuses_a_directory_a_user_owns(tmp_path: Path) -> None:
    home = tmp_path / "home" / "alice"
    (home / ".ssh").mkdir(parents=True)
    os.chown(home, *nobody())
    result = sh(safe_dirs_check(str(home / ".ssh" / "authorized_keys")))
    assert result.returncode == 1
    assert f"{home} is owned by uid {nobody()[0]}" in result.stderr.decode()


@needs_root
def test_safe_dirs_check_follows_a_symlinked_directory_to_where_it_leads(tmp_path: Path) -> None:
    real = tmp_path / "users" / "alice"
    real.mkdir(parents=True)
    os.chown(real, *nobody())
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "conf.d").symlink_to(real)     # root's link into a user's dir
    result = sh(safe_dirs_check(str(tmp_path / "etc" / "conf.d" / "x")))
    assert result.returncode == 1 and b"is owned by uid" in result.stderr


@needs_root
def test_safe_dirs_check_refuses_a_symlink_a_user_owns(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    link = tmp_path / "etc" / "d"
    link.symlink_to(tmp_path)
    os.chown(link, *nobody(), follow_symlinks=False)
    result = sh(safe_dirs_check(str(link / "x")))
    assert result.returncode == 1 and f"{link} is owned by uid".encode() in result.stderr


def test_not_symlink(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(victim)
    assert sh(not_symlink(str(victim))).returncode == 0
    refused = sh(not_symlink(str(link)))
    assert refused.returncode == 1 and b"is a symlink; refusing" in refused.stderr


# ---------------------------------------------------------------- chown / chmod

def test_a_mode_fix_on_a_planted_symlink_leaves_its_target_alone(tmp_path: Path,
                                                                  victim: Path) -> None:
    managed = tmp_path / "managed"
    managed.mkdir()
    planted = managed / "app.conf"
    planted.symlink_to(victim)      # the fact saw a file; the link came after
    before = snapshot(victim)
    cmd = attrs_command(str(planted), fileinfo(mode="0600", owner="x", group="x", uid=5, gid=5),
                        "root", "root", "0644")
    assert cmd is not None
    result = sh(cmd)
    assert result.returncode == 1 and b"is a symlink" in result.stderr
    assert snapshot(victim) == before


def test_chown_uses_h(tmp_path: Path) -> None:
    cmd = attrs_command(str(tmp_path / "f"), fileinfo(owner="a", group="a", uid=5, gid=5),
                        "root", "root", "0644")
    assert cmd is not None and "chown -h root:root --" in cmd.shell()


def test_directory_create_refuses_a_planted_symlink_to_a_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    path = tmp_path / "data"
    op = directory(str(path), mode="0777", read_as_root=False)
    [change] = op.plan(FactView({op.fact: None}))   # nothing there when the fact was read
    path.symlink_to(elsewhere)                       # planted before the step runs
    result = run(change.steps[0])
    assert result.returncode == 1 and b"is a symlink" in result.stderr
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700


def test_directory_create_refuses_a_file_in_its_place(tmp_path: Path) -> None:
    path = tmp_path / "data"
    op = directory(str(path), mode="0777", read_as_root=False)
    [change] = op.plan(FactView({op.fact: None}))
    path.write_bytes(b"x")
    path.chmod(0o600)
    assert run(change.steps[0]).returncode != 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_directory_create_still_works(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b c"
    user = pwd.getpwuid(os.geteuid()).pw_name
    op = directory(str(path), owner=user, group=str(os.getegid()), mode="0750",
                   read_as_root=False)
    [change] = op.plan(FactView({op.fact: None}))
    result = run(change.steps[0])
    assert result.returncode == 0, result.stderr
    assert path.is_dir() and stat.S_IMODE(path.stat().st_mode) == 0o750


# ---------------------------------------------------------------- writes

@needs_root
def test_a_root_write_into_a_user_owned_directory_is_refused(tmp_path: Path,
                                                            victim: Path) -> None:
    ssh = tmp_path / "home" / "alice" / ".ssh"
    ssh.mkdir(parents=True)
    os.chown(ssh, *nobody())
    # alice's trick: her authorized_keys is a link to a root file
    (ssh / "authorized_keys").symlink_to(victim)
    before = snapshot(victim)
    op = file(str(ssh / "authorized_keys"), "ssh-ed25519 AAAA\n", mode="0644",
              read_as_root=True)
    [change] = op.plan(FactView({op.fact: None}))
    result = run(change.steps[0])
    assert result.returncode == 1
    assert f"refusing to write {ssh}/authorized_keys: {ssh} is owned by uid".encode() \
        in result.stderr
    assert snapshot(victim) == before
    assert sorted(p.name for p in ssh.iterdir()) == ["authorized_keys"]   # no temp left


@needs_root
def test_a_write_as_the_owning_user_is_allowed_and_cannot_reach_root_files() -> None:
    # not under pytest's tmp_path: that is 0700 root, which nobody cannot enter
    base = Path(tempfile.mkdtemp(prefix="gpuprov-hygiene-"))
    try:
        base.chmod(0o755)
        uid, gid = nobody()
        victim = base / "shadow"
        victim.write_bytes(b"secret\n")
        victim.chmod(0o600)
        home = base / "alice"
        ssh = home / ".ssh"
        ssh.mkdir(parents=True)
        os.chown(home, uid, gid)
        os.chown(ssh, uid, gid)
        (ssh / "authorized_keys").symlink_to(victim)
        before = snapshot(victim)
        op = file(str(ssh / "authorized_keys"), "ssh-ed25519 AAAA\n", owner="nobody",
                  group=str(gid), mode="0600", as_user="nobody", read_as_root=True)
        [change] = op.plan(FactView({op.fact: None}))
        result = run(change.steps[0])
        assert result.returncode == 0, result.stderr
        # mv replaced the link itself; the root file it pointed to is untouched
        assert snapshot(victim) == before
        keys = ssh / "authorized_keys"
        assert not keys.is_symlink() and keys.read_bytes() == b"ssh-ed25519 AAAA\n"
        assert (keys.stat().st_uid, stat.S_IMODE(keys.stat().st_mode)) == (uid, 0o600)
    finally:
        shutil.rmtree(base)


def test_a_write_replaces_a_planted_symlink_instead_of_following_it(tmp_path: Path,
                                                                     victim: Path) -> None:
    managed = tmp_path / "managed"
    managed.mkdir(mode=0o755)
    target = managed / "app.conf"
    target.symlink_to(victim)
    before = snapshot(victim)
    user = pwd.getpwuid(os.geteuid()).pw_name
    op = file(str(target), "new\n", owner=user, group=str(os.getegid()), read_as_root=False)
    [change] = op.plan(FactView({op.fact: None}))
    assert run(change.steps[0]).returncode == 0
    assert snapshot(victim) == before and target.read_bytes() == b"new\n"
    assert not target.is_symlink()


# ---------------------------------------------------------------- inventory edits

def test_inventory_edit_does_not_follow_a_planted_temp_name(tmp_path: Path,
                                                            victim: Path) -> None:
    inv = tmp_path / "inventory.yml"
    inv.write_text("all: {}\n")
    inv.chmod(0o640)
    # the old fixed temp name, planted as a link to another file
    (tmp_path / ".inventory.yml.gpuprov-tmp").symlink_to(victim)
    before = snapshot(victim)
    backup = replace_with_backup(inv, "all:\n  hosts: {}\n")
    assert snapshot(victim) == before
    assert inv.read_text() == "all:\n  hosts: {}\n" and not inv.is_symlink()
    assert stat.S_IMODE(inv.stat().st_mode) == 0o640
    assert backup.read_text() == "all: {}\n"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([".inventory.yml.gpuprov-tmp", backup.name, "inventory.yml",
                           "outside"])


def test_inventory_edit_does_not_follow_a_planted_backup_name(tmp_path: Path, victim: Path,
                                                              monkeypatch) -> None:
    import gpuprov.model.inventory_edit as edit
    monkeypatch.setattr(edit.time, "strftime", lambda fmt: "20260101-000000")
    inv = tmp_path / "inventory.yml"
    inv.write_text("all: {}\n")
    (tmp_path / "inventory.yml.20260101-000000.bak").symlink_to(victim)
    before = snapshot(victim)
    backup = replace_with_backup(inv, "all:\n  hosts: {}\n")
    assert snapshot(victim) == before
    assert backup.name == "inventory.yml.20260101-000000-1.bak"
    assert backup.read_text() == "all: {}\n"


def test_inventory_edit_temp_is_private_while_written(tmp_path: Path, monkeypatch) -> None:
    inv = tmp_path / "inventory.yml"
    inv.write_text("all: {}\n")
    inv.chmod(0o644)
    seen: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", spy)
    real_mkstemp = tempfile.mkstemp
    modes: list[int] = []

    def mkstemp(*a, **kw):
        fd, name = real_mkstemp(*a, **kw)
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd, name
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    replace_with_backup(inv, "x: 1\n")
    assert modes == [0o600]           # created private, then given the original's mode
    assert seen and seen[-1] == 0o644
