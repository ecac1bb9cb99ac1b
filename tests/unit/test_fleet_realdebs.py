"""Unit tests of tests/fleet/realdebs.py (real Debian .debs for the stand-in archive):
the resolver against a base root's dpkg status, InRelease verification, the
cache (keyed, atomic, reused without network) and indexing beside the stand-ins."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fleet import realdebs
from tests.fleet.errors import FleetUnavailable
from tests.standin_repo import build_repos, input_hash

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("dpkg", "dpkg-deb", "dpkg-scanpackages", "gpg", "gpgv")),
    reason="needs dpkg, dpkg-dev, gpg and gpgv")

INDEX = """\
Package: python3
Version: 3.11.2-1+b1
Pre-Depends: python3-minimal (= 3.11.2-1+b1)
Depends: python3.11 (>= 3.11.2-1~), libpython3-stdlib (= 3.11.2-1+b1)
Filename: pool/main/p/python3/python3_3.11.2-1+b1_amd64.deb
Size: 3
SHA256: x

Package: python3-minimal
Version: 3.11.2-1+b1
Pre-Depends: python3.11-minimal (>= 3.11.2-1~)
Depends: dpkg (>= 1.13.20)

Package: python3.11
Version: 3.11.2-6+deb12u9
Depends: python3.11-minimal (= 3.11.2-6+deb12u9), libpython3.11-stdlib (= 3.11.2-6+deb12u9),
 media-types | mime-support

Package: python3.11-minimal
Version: 3.11.2-6+deb12u9
Pre-Depends: libc6 (>= 2.35)
Depends: libpython3.11-minimal (= 3.11.2-6+deb12u9)

Package: libpython3.11-stdlib
Version: 3.11.2-6+deb12u9
Depends: libpython3.11-minimal (= 3.11.2-6+deb12u9)

Package: libpython3.11-minimal
Version: 3.11.2-6+deb12u9

Package: libpython3-stdlib
Version: 3.11.2-1+b1

Package: cron
Version: 3.0pl1-162
Depends: libc6 (>= 2.34), cron-daemon-common, sysvinit-utils (>= 3.05-4~) | lsb-base
Provides: cron-daemon

Package: cron-daemon-common
Version: 3.0pl1-162
Depends: adduser

Package: mawk
Version: 1.3.4
Provides: awk

Package: needs-awk
Version: 1
Depends: awk:any

Package: needs-ghost
Version: 1
Depends: ghost (>= 2) | phantom
"""

STATUS = """\
Package: dpkg
Status: install ok installed
Version: 1.21.22

Package: libc6
Status: install ok installed
Version: 2.36-9+deb12u10

Package: libpython3-stdlib
Status: install ok installed
Version: 3.11.2-1+b1

Package: libpython3.11-stdlib
Status: install ok installed
Version: 3.11.2-6+deb12u8

Package: libpython3.11-minimal
Status: install ok installed
Version: 3.11.2-6+deb12u8

Package: media-types
Status: install ok installed
Version: 10.0.0

Package: sysvinit-utils
Status: install ok installed
Version: 3.06-4

Package: adduser
Status: deinstall ok config-files
Version: 3.134
"""


def names(stanzas: list[dict[str, str]]) -> list[str]:
    return [s["Package"] for s in stanzas]


def test_resolver_adds_what_the_base_lacks_and_newer_point_releases() -> None:
    index = realdebs.parse_stanzas(INDEX)
    have = realdebs.installed(STATUS)
    assert "adduser" not in have  # config-files only is not installed
    chosen = realdebs.resolve(["python3"], index, have)
    # the base's libpython3.11-* are one point release older than the index's
    # python3.11 wants (=): the newer ones come along as upgrades
    assert names(chosen) == ["libpython3.11-minimal", "libpython3.11-stdlib", "python3",
                             "python3-minimal", "python3.11", "python3.11-minimal"]
    assert "Depends" in chosen[4] and "mime-support" in chosen[4]["Depends"]


def test_resolver_alternatives_provides_and_missing() -> None:
    index = realdebs.parse_stanzas(INDEX)
    have = realdebs.installed(STATUS)
    with pytest.raises(realdebs.ResolveError, match="cron-daemon-common needs adduser"):
        realdebs.resolve(["cron"], index, have)
    have["adduser"] = "3.134"
    # sysvinit-utils (>= 3.05-4~) is installed: lsb-base is not needed
    assert names(realdebs.resolve(["cron"], index, have)) == ["cron", "cron-daemon-common"]
    # a virtual name (with an arch qualifier) is satisfied by a provider
    assert names(realdebs.resolve(["needs-awk"], index, have)) == ["mawk", "needs-awk"]
    with pytest.raises(realdebs.ResolveError, match=r"ghost \(>= 2\) \| phantom"):
        realdebs.resolve(["needs-ghost"], index, have)
    with pytest.raises(realdebs.ResolveError, match="nosuch is not in"):
        realdebs.resolve(["nosuch"], index, have)


def test_release_sha256() -> None:
    release = ("Origin: Debian\nMD5Sum:\n 00 1 main/binary-amd64/Packages.xz\n"
               "SHA256:\n aa 10 main/binary-all/Packages.xz\n"
               " bb 20 main/binary-amd64/Packages.xz\nAcquire-By-Hash: yes\n")
    assert realdebs.release_sha256(release, "main/binary-amd64/Packages.xz") == ("bb", 20)
    with pytest.raises(FleetUnavailable, match="does not list"):
        realdebs.release_sha256(release, "contrib/binary-amd64/Packages.xz")


def _gpg(home: Path, *args: str) -> bytes:
    return subprocess.run(["gpg", "--batch", "--quiet", *args], check=True, capture_output=True,
                          env=dict(os.environ, GNUPGHOME=str(home))).stdout


def test_inrelease_is_checked_with_gpgv(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    try:
        _gpg(home, "--pinentry-mode", "loopback", "--passphrase", "",
             "--quick-generate-key", "archive <a@test.invalid>", "ed25519", "sign", "never")
        keyring = tmp_path / "keyring.gpg"
        keyring.write_bytes(_gpg(home, "--export"))
        (tmp_path / "Release").write_text("Suite: bookworm\nSHA256:\n aa 1 x\n")
        _gpg(home, "--clearsign", "--output", str(tmp_path / "InRelease"),
             str(tmp_path / "Release"))
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False, capture_output=True,
                       env=dict(os.environ, GNUPGHOME=str(home)))
    signed = (tmp_path / "InRelease").read_bytes()
    assert realdebs.verified_release(signed, keyring).startswith("Suite: bookworm\n")
    with pytest.raises(FleetUnavailable, match="does not verify"):
        realdebs.verified_release(signed.replace(b"aa 1 x", b"ab 1 x"), keyring)
    with pytest.raises(FleetUnavailable, match="is missing"):
        realdebs.verified_release(signed, tmp_path / "nokeyring.gpg")


def _fake_mirror(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes],
                 fail: str | None = None) -> list[str]:
    fetched: list[str] = []

    def get(url: str) -> bytes:
        fetched.append(url)
        if url == fail:
            raise FleetUnavailable(f"downloading {url} failed: reset")
        return files[url]

    index = "".join(
        f"Package: {name}\nVersion: 1\nFilename: pool/{name}_1_all.deb\n"
        f"Size: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        + (f"Depends: {dep}\n" if dep else "") + "\n"
        for name, data, dep in (("a", files["M/pool/a_1_all.deb"], "b"),
                                ("b", files["M/pool/b_1_all.deb"], "")))
    monkeypatch.setattr(realdebs, "_get", get)
    monkeypatch.setattr(realdebs, "fetch_index", lambda mirror: realdebs.parse_stanzas(index))
    return fetched


def test_cache_is_keyed_atomic_and_reused(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base"
    (base / "var/lib/dpkg").mkdir(parents=True)
    (base / "var/lib/dpkg/status").write_text(STATUS)
    files = {"M/pool/a_1_all.deb": b"deb a", "M/pool/b_1_all.deb": b"deb b"}
    cache = tmp_path / "cache"
    # a download killed halfway leaves nothing later runs would trust
    _fake_mirror(monkeypatch, files, fail="M/pool/b_1_all.deb")
    with pytest.raises(FleetUnavailable):
        realdebs.ensure_real_debs(cache, base, ["a"], mirror="M")
    assert list((cache / "realdebs").iterdir()) == []
    files["M/pool/b_1_all.deb"] = b"deb b"
    fetched = _fake_mirror(monkeypatch, files)
    got = realdebs.ensure_real_debs(cache, base, ["a"], mirror="M")
    assert got.name == realdebs.cache_key(["a"], "M", STATUS)
    manifest = json.loads((got / "manifest.json").read_text())
    assert sorted(manifest["packages"]) == ["a", "b"] and manifest["mirror"] == "M"
    assert (got / "b_1_all.deb").read_bytes() == b"deb b"
    fetched.clear()
    assert realdebs.ensure_real_debs(cache, base, ["a"], mirror="M") == got
    assert fetched == []  # no network for a cached list
    assert realdebs.cache_key(["a"], "M2", STATUS) != got.name
    assert realdebs.cache_key(["a", "b"], "M", STATUS) != got.name
    assert realdebs.cache_key(["a"], "M", STATUS + "\n") != got.name


def test_a_corrupt_deb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"M/pool/a_1_all.deb": b"deb a", "M/pool/b_1_all.deb": b"deb b"}
    _fake_mirror(monkeypatch, files)
    files["M/pool/b_1_all.deb"] = b"evil b"
    stanza = {"Filename": "pool/b_1_all.deb", "Size": "5",
              "SHA256": hashlib.sha256(b"deb b").hexdigest()}
    with pytest.raises(FleetUnavailable, match="does not match the Packages index"):
        realdebs._download_deb("M", stanza, tmp_path)


def test_real_debs_are_indexed_beside_the_standins(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "DEBIAN").mkdir(parents=True)
    (stage / "DEBIAN/control").write_text(
        "Package: realthing\nVersion: 2.0-1\nArchitecture: all\n"
        "Maintainer: x <x@invalid>\nDescription: a real package\n")
    real = tmp_path / "real"
    real.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(stage),
                    str(real / "realthing_2.0-1_all.deb")], check=True, capture_output=True)
    (real / "manifest.json").write_text(json.dumps(
        {"packages": {"realthing": {"version": "2.0-1", "file": "realthing_2.0-1_all.deb"}}}))
    kver, url = platform.release(), "http://127.0.0.1:8080/cuda"
    assert input_hash(kver, url, real) != input_hash(kver, url)
    out = tmp_path / "out"
    built = build_repos(out, kver, out / "gnupg", url, real_debs=real)
    packages = (built.archive_dir / "Packages").read_text()
    assert "Package: realthing\nVersion: 2.0-1\n" in packages
    assert "Package: containerd.io\n" in packages  # the stand-ins are still there
    assert built.versions["realthing"] == ["2.0-1"]
    assert built.input_hash == input_hash(kver, url, real)
