"""Unit tests of tests/standin_repo: builds the stand-in apt repos into a temp dir and
checks package names, versions, dependencies, contents and signatures."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.standin_repo import BuiltRepos, build, build_repos, ensure_repos, input_hash

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("dpkg-deb", "dpkg-scanpackages", "gpg", "gpgv")),
    reason="needs dpkg-dev, gpg and gpgv")

KVER = platform.release()
CUDA_URL = "http://127.0.0.1:8080/cuda"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepos:
    out = tmp_path_factory.mktemp("repos")
    return build_repos(out, KVER, out / "gnupg", CUDA_URL)


def stanzas(repo_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    result = {}
    for block in (repo_dir / "Packages").read_text().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line
                      and not line.startswith(" "))
        result[(fields["Package"], fields["Version"])] = fields
    return result


def test_archive_packages(built: BuiltRepos) -> None:
    pkgs = stanzas(built.archive_dir)
    names = {name for name, _ in pkgs}
    for branch in (470, 535, 550, 580):
        assert {f"nvidia-headless-{branch}-server", f"nvidia-utils-{branch}-server",
                f"nvidia-driver-{branch}"} <= names
    assert {f"linux-headers-{KVER}", "docker-ce", "docker-ce-cli", "containerd.io", "mokutil",
            "cuda-keyring"} <= names
    driver = pkgs[("nvidia-driver-580", "580.95.05-0ubuntu1")]
    assert driver["Depends"] == ("nvidia-headless-580-server (= 580.95.05-0ubuntu1), "
                                 "nvidia-utils-580-server (= 580.95.05-0ubuntu1)")
    headless = pkgs[("nvidia-headless-550-server", "550.163.01-0ubuntu1")]
    for field in ("Provides", "Conflicts", "Replaces"):
        assert headless[field] == "nvidia-kernel-module"
    docker = pkgs[("docker-ce", "5:28.2.2-1~debian.12~bookworm")]
    assert "containerd.io (>= 1.7.27)" in docker["Depends"] and "docker-ce-cli" in docker["Depends"]
    assert ("cuda-keyring", "1.1-1") in pkgs
    assert not (built.archive_dir / "InRelease").exists()  # used with [trusted=yes]


def test_toolkit_repo_layout_and_dependencies(built: BuiltRepos) -> None:
    assert built.libnvidia_container_repo == built.libnvidia_container_dir / "stable/deb/amd64"
    assert (built.libnvidia_container_dir / "gpgkey").read_text().startswith(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----")
    pkgs = stanzas(built.libnvidia_container_repo)
    for version in ("1.17.8-1", "1.18.0-1"):
        toolkit = pkgs[("nvidia-container-toolkit", version)]["Depends"]
        assert f"nvidia-container-toolkit-base (= {version})" in toolkit
        assert f"libnvidia-container-tools (>= {version})" in toolkit
        assert f"libnvidia-container1 (>= {version})" in pkgs[
            ("libnvidia-container-tools", version)]["Depends"]
        assert ("libnvidia-container1", version) in pkgs
    assert built.versions["nvidia-container-toolkit"] == ["1.17.8-1", "1.18.0-1"]


@pytest.mark.parametrize("repo", ["libnvidia-container", "cuda"])
def test_signatures_verify(built: BuiltRepos, repo: str) -> None:
    repo_dir = built.libnvidia_container_repo if repo == "libnvidia-container" else built.cuda_dir
    keyring = str(built.binary_keys[repo])
    for args in (["InRelease"], ["Release.gpg", "Release"]):
        result = subprocess.run(["gpgv", "--keyring", keyring, *args], cwd=repo_dir,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    other = str(built.binary_keys["cuda" if repo != "cuda" else "libnvidia-container"])
    wrong = subprocess.run(["gpgv", "--keyring", other, "InRelease"], cwd=repo_dir,
                           capture_output=True, check=False)
    assert wrong.returncode != 0
    release = (repo_dir / "Release").read_text()
    assert "SHA256:" in release and " Packages.gz" in release


def _contents(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                          check=True).stdout


def test_package_contents(built: BuiltRepos, tmp_path: Path) -> None:
    headers = next(built.archive_dir.glob(f"linux-headers-{KVER}_*.deb"))
    assert f"./lib/modules/{KVER}/build -> /usr/src/linux-headers-{KVER}" in _contents(headers)
    utils = next(built.archive_dir.glob("nvidia-utils-580-server_*.deb"))
    assert "./usr/bin/nvidia-smi -> /usr/libexec/gpuprov-test-doubles/bin/nvidia-smi" in \
        _contents(utils)
    keyring = next(built.archive_dir.glob("cuda-keyring_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(keyring), str(tmp_path)], check=True)
    assert (tmp_path / "usr/share/keyrings/cuda-archive-keyring.gpg").read_bytes() == \
        built.binary_keys["cuda"].read_bytes()
    assert (tmp_path / "etc/apt/sources.list.d/cuda-debian12-x86_64.list").read_text() == (
        f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {CUDA_URL}/ /\n")
    headless = next(built.archive_dir.glob("nvidia-headless-580-server_*.deb"))
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(headless), str(control)], check=True)
    assert "VERSION=580.95.05\n" in (control / "postinst").read_text()
    pkgs = stanzas(built.cuda_dir)
    assert ("nvidia-open", "580.95.05-1") in pkgs and ("nvidia-driver-pinning-580",
                                                       "580.95.05-1") in pkgs


def test_input_hash_and_cache(tmp_path: Path) -> None:
    assert input_hash(KVER, CUDA_URL) == input_hash(KVER, CUDA_URL)
    assert input_hash(KVER, CUDA_URL) != input_hash("6.1.0-99-amd64", CUDA_URL)
    first = ensure_repos(tmp_path, KVER, CUDA_URL)
    stamp = (first.archive_dir / "Packages").stat().st_mtime_ns
    again = ensure_repos(tmp_path, KVER, CUDA_URL)
    assert again == first and (again.archive_dir / "Packages").stat().st_mtime_ns == stamp


def test_input_hash_covers_the_doubles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the doubles reach the fleet hosts only through these packages (the fleet's base root
    # has none of them), so a changed double must mean a rebuilt repository
    copy = tmp_path / "doubles"
    shutil.copytree(build.DOUBLES, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(build, "DOUBLES", copy)
    before = input_hash(KVER, CUDA_URL)
    hook = copy / "boot.d" / "nvidia"
    hook.write_text(hook.read_text() + "# changed\n")
    assert input_hash(KVER, CUDA_URL) != before


def test_chrony_package(built: BuiltRepos, tmp_path: Path) -> None:
    chrony = stanzas(built.archive_dir)[("chrony", "4.3-2+deb12u1")]
    assert chrony["Depends"] == "gpuprov-test-doubles"
    assert "TEST DOUBLE for gpuprov's test fleet" in chrony["Description"]
    assert built.versions["chrony"] == ["4.3-2+deb12u1"]
    deb = next(built.archive_dir.glob("chrony_*.deb"))
    contents = _contents(deb)
    home = "/usr/libexec/gpuprov-test-doubles"
    for line in (f"./usr/sbin/chronyd -> {home}/daemon/chronyd",
                 f".{home}/daemon/chronyd -> /bin/sleep",
                 f"./usr/bin/chronyc -> {home}/bin/chronyc",
                 f".{home}/bin/chronyc", "./etc/init.d/chrony",
                 "./etc/chrony/chrony.conf", "./etc/chrony/conf.d/", "./etc/chrony/sources.d/"):
        assert line in contents
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "root")], check=True)
    conf = (tmp_path / "root/etc/chrony/chrony.conf").read_text()
    assert conf.startswith("# TEST DOUBLE for gpuprov's test fleet")
    for directive in ("confdir /etc/chrony/conf.d", "sourcedir /etc/chrony/sources.d",
                      "driftfile /var/lib/chrony/chrony.drift", "makestep 1 3", "rtcsync"):
        assert f"\n{directive}\n" in conf
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "control")], check=True)
    control = tmp_path / "control"
    assert "/etc/chrony/chrony.conf\n" in (control / "conffiles").read_text()
    assert "update-rc.d chrony defaults" in (control / "postinst").read_text()
    assert "invoke-rc.d chrony stop" in (control / "prerm").read_text()
    assert "update-rc.d chrony remove" in (control / "postrm").read_text()
