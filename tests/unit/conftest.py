"""Unit tests never take the real run lock (/run/gpuprov) of this machine:
each inventory host of a test gets a lock file of its own in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.engine.hostlock import LOCK_PATH_ENV


@pytest.fixture(autouse=True)
def _run_lock_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    locks: Path = tmp_path_factory.mktemp("locks")
    monkeypatch.setenv(LOCK_PATH_ENV, str(locks / "{host}.lock"))
