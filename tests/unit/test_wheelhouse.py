"""tests/wheelhouse.py: wheels repacked from this venv's installed
distributions install offline (what the README quick-start fleet test gives
the literal `pip install .` of command 1)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from tests import wheelhouse


def test_the_closure_holds_every_requirement_once() -> None:
    names = [d.metadata["Name"].lower() for d in wheelhouse.closure(["paramiko"])]
    assert "paramiko" in names and "cryptography" in names and "cffi" in names
    assert len(names) == len(set(names))


def test_a_repacked_wheel_has_its_files_a_true_record_and_no_installer_files(
        tmp_path: Path) -> None:
    (wheel,) = wheelhouse.build(tmp_path, ["mdurl"])
    assert wheel.name.startswith("mdurl-") and wheel.name.endswith("-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "mdurl/__init__.py" in names
        assert not [n for n in names if "__pycache__" in n or n.startswith("..")
                    or n.endswith(("/INSTALLER", "/REQUESTED", "/direct_url.json"))]
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        for line in zf.read(record).decode().splitlines():
            path, digest, size = line.rsplit(",", 2)
            if path == record:
                continue
            data = zf.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == "sha256=" + expected.decode() and int(size) == len(data)


def test_repacked_wheels_install_with_no_index(tmp_path: Path) -> None:
    wheelhouse.build(tmp_path / "wheels", ["mdurl"])
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-index", "--find-links", str(tmp_path / "wheels"), "--target",
         str(tmp_path / "site"), "mdurl"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "mdurl" / "__init__.py").is_file()
