"""FileState: canned outputs, and the real probe run by /bin/sh on tmp files."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile

import pytest

from gpuprov.facts.base import FactError, gather_script, parse_batch
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.facts.system import PathExists


def gather(*facts: FileState, as_nobody: bool = False) -> dict:
    """Run the one-round-trip batch locally, as a connector would remotely."""
    script, marker = gather_script(list(facts))
    argv = ["/bin/sh", "-c", script]
    if as_nobody:  # root reads everything: drop to nobody to see a refusal
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    return parse_batch(list(facts), out.decode("utf-8", "surrogateescape"), marker)


# -- canned output ----------------------------------------------------------

def test_absent() -> None:
    assert FileState("/etc/x").process("absent\n", 0) is None


def test_file_with_content() -> None:
    data = b"a\x00\xff\nno newline"
    out = "file\n0:0:644:16:root:root\nbase64\n" + base64.b64encode(data).decode() + "\nrc 0\n"
    info = FileState("/etc/x").process(out, 0)
    assert info == FileInfo(type="file", owner="root", group="root", mode="0644", size=16,
                            uid=0, gid=0, sha256=hashlib.sha256(data).hexdigest(),
                            content=data)
    assert info.content == data


def test_empty_file() -> None:
    info = FileState("/etc/x").process("file\n0:0:600:0:root:root\nbase64\nrc 0\n", 0)
    assert info is not None and info.content == b"" and info.mode == "0600"


def test_sha_only_and_unnamed_owner() -> None:
    sha = "ab" * 32
    info = FileState("/etc/x").process(f"file\n1001:1002:4755:9:UNKNOWN:UNKNOWN\nsha256 {sha}\n", 0)
    assert info is not None
    assert (info.owner, info.group, info.mode, info.sha256, info.content) == (
        "1001", "1002", "4755", sha, None)
    assert info.owned_by("1001", "1002")


def test_directory_link_other() -> None:
    d = FileState("/srv").process("directory\n0:0:755:4096:root:root\n", 0)
    assert d is not None and d.type == "directory" and d.content is None
    target = base64.b64encode(b"/opt/data\n").decode()
    link = FileState("/data").process(f"link\n0:0:777:9:root:root\n{target}\n", 0)
    assert link is not None and link.type == "link" and link.link_target == "/opt/data"
    fifo = FileState("/run/x").process("other\n0:0:644:0:root:root\n", 0)
    assert fifo is not None and fifo.type == "other"


def test_unreadable_is_an_error_not_absent() -> None:
    with pytest.raises(FactError, match=r"cannot stat /etc/sudoers.d/x: .*Permission denied"
                                        r".*sudo=True"):
        FileState("/etc/sudoers.d/x").process(
            "error stat: cannot statx '/etc/sudoers.d/x': Permission denied\n", 1)
    # stat worked but the content could not be read (mode 0600, no sudo)
    with pytest.raises(FactError, match="cannot read /etc/token"):
        FileState("/etc/token").process("file\n0:0:600:5:root:root\nbase64\nrc 2\n", 0)
    with pytest.raises(FactError, match="cannot read /etc/token"):
        FileState("/etc/token", content=False).process("file\n0:0:600:5:root:root\n", 0)


def test_garbage_output() -> None:
    with pytest.raises(FactError):
        FileState("/etc/x").process("", 0)
    with pytest.raises(FactError):
        FileState("/etc/x").process("weird\n", 0)


# -- arguments, key, sudo -----------------------------------------------------

def test_sudo_is_per_instance() -> None:
    assert FileState("/etc/ssh/sshd_config", sudo=True).sudo is True
    assert FileState("/etc/hosts").sudo is False
    assert FileState("/etc/hosts") == FileState("/etc/hosts", content=True, sudo=False)
    assert FileState("/etc/hosts") != FileState("/etc/hosts", sudo=True)


def test_selectors_name_one_path_or_a_tree_whatever_the_options() -> None:
    at = FileState.at("/etc/docker/daemon.json")
    assert at.matches(FileState("/etc/docker/daemon.json", sudo=True))
    assert at.matches(FileState("/etc/docker/daemon.json", content=False))
    assert not at.matches(FileState("/etc/docker/daemon.json.bak"))
    assert not at.matches(PathExists("/etc/docker/daemon.json"))
    under = FileState.under("/data")
    assert under.matches(FileState("/data/x/y"))
    assert not under.matches(FileState("/data"))
    assert not under.matches(FileState("/datax"))


def test_relative_path_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        FileState("etc/hosts")


def test_command_quotes_the_path() -> None:
    shell = FileState("/tmp/a b'c").command().shell()
    assert shell.startswith("""p='/tmp/a b'"'"'c'; if s=$(stat -c '%u:%g:%a:%s:%U:%G' -- "$p" """)
    assert "[ \"$z\" -le 1048576 ]" in shell
    assert "if false &&" in FileState("/x", content=False).command().shell()


# -- the real probe, run locally ----------------------------------------------

def test_local_probe(tmp_path) -> None:
    binary = bytes(range(256)) + b"\r\nlast line, no newline"
    (tmp_path / "bin").write_bytes(binary)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "with space 'q'").write_text("x\n")
    os.chmod(tmp_path / "bin", 0o640)
    (tmp_path / "dir").mkdir(mode=0o750)
    os.chmod(tmp_path / "dir", 0o2750)
    os.symlink("/nonexistent/target", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    facts = {
        "bin": FileState(str(tmp_path / "bin")),
        "empty": FileState(str(tmp_path / "empty")),
        "space": FileState(str(tmp_path / "with space 'q'")),
        "dir": FileState(str(tmp_path / "dir")),
        "link": FileState(str(tmp_path / "link")),
        "fifo": FileState(str(tmp_path / "fifo")),
        "absent": FileState(str(tmp_path / "absent")),
        "under_file": FileState(str(tmp_path / "bin" / "x")),
        "big": FileState(str(tmp_path / "bin"), limit=10),
        "no_content": FileState(str(tmp_path / "bin"), content=False),
    }
    results = gather(*facts.values())
    got = {name: results[fact] for name, fact in facts.items()}
    st = os.stat(tmp_path / "bin")
    sha = hashlib.sha256(binary).hexdigest()

    b = got["bin"]
    assert (b.type, b.mode, b.size, b.uid, b.gid, b.sha256) == (
        "file", "0640", len(binary), st.st_uid, st.st_gid, sha)
    assert b.content == binary  # every byte, and no newline added at the end
    assert got["empty"].content == b"" and got["empty"].size == 0
    assert got["space"].content == b"x\n"
    assert got["dir"].type == "directory" and got["dir"].mode == "2750"
    assert got["link"].type == "link" and got["link"].link_target == "/nonexistent/target"
    assert got["fifo"].type == "other"
    assert got["absent"] is None
    assert got["under_file"] is None
    assert got["big"].content is None and got["big"].sha256 == sha
    assert got["no_content"].content is None and got["no_content"].sha256 == sha


def test_local_probe_unreadable() -> None:
    as_nobody = os.geteuid() == 0
    if as_nobody and not shutil.which("setpriv"):
        pytest.skip("running as root and no setpriv to drop privileges")
    # not tmp_path: pytest's base dir is 0700, so nobody could not even reach it
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        locked = os.path.join(top, "locked")
        os.mkdir(locked)
        open(os.path.join(locked, "f"), "w").close()
        secret = os.path.join(top, "secret")
        with open(secret, "w") as fh:
            fh.write("token")
        os.chmod(secret, 0o600 if as_nobody else 0)
        os.chmod(locked, 0o700 if as_nobody else 0)
        try:
            with pytest.raises(FactError, match="Permission denied.*sudo=True"):
                gather(FileState(os.path.join(locked, "f")), as_nobody=as_nobody)
            with pytest.raises(FactError, match="cannot read .*secret"):
                gather(FileState(secret), as_nobody=as_nobody)
            # the sha256 of a big file needs read permission too
            with pytest.raises(FactError, match="cannot read .*secret"):
                gather(FileState(secret, limit=0), as_nobody=as_nobody)
        finally:
            os.chmod(locked, 0o700)
