"""`pip install .` ships the top-level roles/ and playbooks/ inside the package
(gpuprov/bundled/) and a `gpuprov` console script, and an installed copy
finds them from any directory.

The wheel is built from a copy of the repository in tmp_path: building in
place would leave build/ (and egg-info) in the checkout.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLED = ("gpuprov/bundled/roles/base/tasks.py",
           "gpuprov/bundled/roles/base/defaults.yml",
           "gpuprov/bundled/roles/base/templates/motd.j2",
           # a role's own module, beside its tasks.py
           "gpuprov/bundled/roles/verify/gpu.py",
           "gpuprov/bundled/playbooks/site.yml",
           "gpuprov/bundled/playbooks/verify.yml")
# Not needed to build a wheel, and large or machine-specific.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                    "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
                                    ".fleet-state", ".benchmarks", "tests")


def _build_requirements_installed() -> bool:
    """pyproject's build-system requires (setuptools>=68, wheel) in this interpreter."""
    if importlib.util.find_spec("wheel") is None:
        return False
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 68


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=NOT_COPIED, symlinks=True)
    out = work / "dist"
    top_before = sorted(p.name for p in REPO.iterdir())
    args = ["wheel", str(source), "--no-deps", "-w", str(out)]
    if _build_requirements_installed():
        args.insert(3, "--no-build-isolation")   # offline, the venv's own setuptools
    # else pip builds in an isolated env with the declared build requirements
    _pip(*args, cwd=work)
    assert sorted(p.name for p in REPO.iterdir()) == top_before, "the build wrote into the repo"
    wheels = list(out.glob("gpuprov-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_the_bundled_roles_playbooks_and_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [n for n in BUNDLED if n not in names]
        assert not missing, f"not in the wheel: {missing}"
        for name in BUNDLED:
            # the same bytes as the top-level copy people read and fork
            relative = name.removeprefix("gpuprov/bundled/")
            assert zf.read(name) == (REPO / relative).read_bytes(), name
        assert not [n for n in names if "/bundled/" in n and ("__pycache__" in n
                                                               or n.endswith(".pyc"))]
        # package data: the health rules' defaults gpuprov status reads
        assert zf.read("gpuprov/data/health_defaults.yml") == \
            (REPO / "src/gpuprov/data/health_defaults.yml").read_bytes()
        entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert len(entry_points) == 1, entry_points
        parser = configparser.ConfigParser()
        parser.read_string(zf.read(entry_points[0]).decode())
    assert parser["console_scripts"]["gpuprov"].strip() == "gpuprov.cli:main"


def test_installed_copy_finds_its_bundled_playbook_and_roles_from_any_directory(
        wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site-packages"
    _pip("install", "--no-deps", "--no-compile", "--target", str(target), str(wheel),
         cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of the editable checkout
    probe = ("import gpuprov.model.paths as p; print(p.__file__); print(p.bundled_dir('roles')); "
             "print(p.default_playbook())")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    module, roles, playbook = proc.stdout.splitlines()
    package = target / "gpuprov"
    assert Path(module).parent.parent == package
    assert Path(roles) == package / "bundled" / "roles"
    assert Path(playbook) == package / "bundled" / "playbooks" / "site.yml"

    # The installed command finds the bundled playbook and its role: a tag
    # nothing carries stops the run after they were loaded, before any host
    # is touched.
    proc = subprocess.run([sys.executable, "-m", "gpuprov.cli", "apply", "--check",
                           "-t", "no-such-tag"], cwd=elsewhere, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "unknown tag(s): no-such-tag" in proc.stderr
    assert "tags in this playbook: access, always, base" in proc.stderr
