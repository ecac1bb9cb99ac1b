"""What unit tests share: the run lock and the last-apply record kept off this
machine's /run and /var/lib (each inventory host of a test gets files of its
own in a temp dir), and the
fixtures of the SSH connector tests (an in-process sshd, keys, a HOME of
their own: modules that need it say `usefixtures("isolated_home")`)."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from gpuprov.engine.hostlock import LOCK_PATH_ENV
from gpuprov.engine.lastapply import RECORD_PATH_ENV
from tests.unit.fake_sshd import FakeSshd


@pytest.fixture(autouse=True)
def _run_lock_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    locks: Path = tmp_path_factory.mktemp("locks")
    monkeypatch.setenv(LOCK_PATH_ENV, str(locks / "{host}.lock"))
    # and apply's last-apply record off this machine's /var/lib/gpuprov
    monkeypatch.setenv(RECORD_PATH_ENV, str(locks / "{host}-last-apply.json"))


# ---------------------------------------------------------------- SSH connector tests

@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the real ~/.ssh or the user's ssh-agent."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture(scope="session")
def host_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture(scope="session")
def client_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture
def key_file(tmp_path: Path, client_key: paramiko.PKey) -> Path:
    path = tmp_path / "id_test"
    client_key.write_private_key_file(str(path))
    return path


@pytest.fixture
def sshd(tmp_path: Path, host_key: paramiko.PKey, client_key: paramiko.PKey):
    workdir = tmp_path / "remote"
    workdir.mkdir()
    server = FakeSshd(workdir, host_key, [client_key])
    yield server
    server.stop()


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    return tmp_path / "known_hosts"
