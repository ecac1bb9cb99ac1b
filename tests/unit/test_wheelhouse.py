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


# -- gpuprov's own wheelhouse (engine/wheelhouse.py, what pull-setup copies) ----------

def test_gpuprov_wheelhouse_holds_gpuprov_and_its_requirements_the_same_each_time(
        tmp_path: Path) -> None:
    from importlib import metadata

    from gpuprov.engine.wheelhouse import gpuprov_wheelhouse

    first = gpuprov_wheelhouse(tmp_path / "a")
    assert first.version == metadata.version("gpuprov")
    names = [w.name.split("-")[0].lower() for w in first.wheels]
    assert names.count("gpuprov") == 1
    assert {"paramiko", "jinja2", "click", "packaging"} <= set(names)
    with zipfile.ZipFile(next(w for w in first.wheels if w.name.startswith("gpuprov-"))) as zf:
        # an editable checkout's wheel is built from it: roles and playbooks bundled
        assert "gpuprov/bundled/roles/pull/tasks.py" in zf.namelist()
    second = gpuprov_wheelhouse(tmp_path / "b")
    # byte for byte: a second pull-setup finds every wheel on the host unchanged
    assert [w.read_bytes() for w in first.wheels] == [w.read_bytes() for w in second.wheels]


def wheels(tmp_path: Path, *names: str) -> list[Path]:
    return [tmp_path / n for n in names]


def test_unfit_names_projects_no_wheel_of_which_installs_on_the_host(tmp_path: Path) -> None:
    from gpuprov.engine.wheelhouse import unfit

    house = wheels(tmp_path, "click-8.1.7-py3-none-any.whl",
                   "cryptography-44.0.0-cp39-abi3-manylinux_2_34_x86_64.whl",
                   "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                   "cffi-1.17.1-cp311-cp311-manylinux_2_17_aarch64.whl",
                   "cffi-1.17.1-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert unfit(house, (3, 11), "x86_64") == []
    # abi3 fits a newer Python, cp311 does not
    assert unfit(house, (3, 12), "x86_64") == ["cffi", "pyyaml"]
    # one build of cffi fits arm64; PyYAML and cryptography are x86_64 only
    assert unfit(house, (3, 11), "aarch64") == ["cryptography", "pyyaml"]
    # abi3 needs at least its Python
    assert unfit(house[:2], (3, 8), "x86_64") == ["cryptography"]


def test_a_wheelhouse_is_read_with_its_gpuprov_version(tmp_path: Path) -> None:
    import pytest

    from gpuprov.engine.wheelhouse import Wheelhouse, WheelhouseError

    for name in ("gpuprov-0.3.0-py3-none-any.whl", "click-8.1.7-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"PK")
    house = Wheelhouse.read(tmp_path)
    assert house.version == "0.3.0" and len(house.wheels) == 2
    with pytest.raises(WheelhouseError, match="not a directory"):
        Wheelhouse.read(tmp_path / "missing")


def test_an_editable_install_points_at_its_checkout() -> None:
    from importlib import metadata

    from gpuprov.engine.wheelhouse import editable_source

    source = editable_source(metadata.distribution("gpuprov"))
    assert source is None or (source / "pyproject.toml").is_file()
    assert editable_source(metadata.distribution("click")) is None
