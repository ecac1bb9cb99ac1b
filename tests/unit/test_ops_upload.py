"""upload(): a controller file copied as its bytes, compared by sha256 only
(the host's copy never travels back), its diff one line of digests, never
the bytes; a secret one without even the digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gpuprov.facts.base import FactView
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.file_plan import FileOpError, NoteDiff
from gpuprov.ops.upload import upload

DATA = b"PK\x03\x04\0\x01binary wheel\xff" * 100


def info(data: bytes, mode: str = "0644", owner: str = "root") -> FileInfo:
    return FileInfo("file", owner, "root", mode, len(data), 0, 0,
                    hashlib.sha256(data).hexdigest())


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "w.whl"
    path.write_bytes(DATA)
    return path


def test_asks_only_for_the_digest(source: Path) -> None:
    op = upload("/opt/gpuprov/wheels/w.whl", source)
    assert op.facts() == [FileState("/opt/gpuprov/wheels/w.whl", content=False)]
    assert upload("/etc/gpuprov/key", source, mode="0600").fact.sudo


def test_a_missing_file_is_written_from_stdin_with_a_digest_note(source: Path) -> None:
    op = upload("/opt/gpuprov/wheels/w.whl", source)
    [change] = op.plan(FactView({op.fact: None}))
    assert change.action == "create" and change.steps[0].stdin == DATA
    assert isinstance(change.diff, NoteDiff)
    digest = hashlib.sha256(DATA).hexdigest()[:12]
    assert change.diff.unified() == (
        "--- /opt/gpuprov/wheels/w.whl\n+++ /opt/gpuprov/wheels/w.whl\n"
        f"{len(DATA)} bytes from {source}, sha256 (absent) -> {digest}\n")


def test_the_same_bytes_are_no_change_and_other_bytes_are_replaced(source: Path) -> None:
    op = upload("/opt/gpuprov/wheels/w.whl", source)
    assert op.plan(FactView({op.fact: info(DATA)})) == []
    [change] = op.plan(FactView({op.fact: info(b"old")}))
    assert change.action == "update" and change.steps[0].stdin == DATA
    assert hashlib.sha256(b"old").hexdigest()[:12] in change.diff.unified()


def test_a_text_file_is_never_shown_either(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    op = upload("/opt/x/notes.txt", path)
    [change] = op.plan(FactView({op.fact: None}))
    assert "hello" not in change.diff.unified()


def test_only_the_mode_differs(source: Path) -> None:
    op = upload("/opt/gpuprov/wheels/w.whl", source)
    [change] = op.plan(FactView({op.fact: info(DATA, mode="0600")}))
    assert change.steps[0].stdin is None
    assert "content unchanged" in change.diff.unified()


def test_a_secret_shows_neither_bytes_nor_digests(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nxyz\n")
    op = upload("/etc/gpuprov/pull-deploy-key", key, mode="0600", secret=True)
    [change] = op.plan(FactView({op.fact: info(b"other", mode="0600")}))
    shown = change.diff.unified() + repr(change.to_json())
    assert "OPENSSH" not in shown and "xyz" not in shown
    assert hashlib.sha256(key.read_bytes()).hexdigest()[:12] not in shown
    assert "secret content, not shown" in change.diff.unified()


def test_an_unreadable_source_is_an_error_naming_both(tmp_path: Path) -> None:
    with pytest.raises(FileOpError, match=r"cannot read .*missing on this machine to copy "
                       r"it to /opt/x"):
        upload("/opt/x", tmp_path / "missing")
