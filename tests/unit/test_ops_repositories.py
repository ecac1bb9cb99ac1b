"""signed_repository(): the apt or dnf repository of the host's family, signed
by a key read on the controller only when the op plans; an unreadable key is
a blocked change (the engine's settle_blocked makes it unknown in check mode
and fails the task in apply)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gpuprov.engine.roleops import settle_blocked
from gpuprov.errors import GpuprovError
from gpuprov.facts.apt import AptKeyring, AptSources
from gpuprov.facts.base import FactView
from gpuprov.facts.dnf import DnfRepoFiles
from gpuprov.ops import apt, dnf, keys
from gpuprov.ops.base import Change
from gpuprov.ops.repositories import SignedRepository, signed_repository
from tests.unit.role_facts import ARMORED_KEY, ARMORED_SHA256, KEY_SHA256, make_key_file
from tests.unit.role_harness import DEBIAN_12, RHEL_9, UBUNTU_2404

URL = "https://repo.example/stable"
KEYRING = "/usr/share/keyrings/example.gpg"
RPM_KEY = "/etc/pki/rpm-gpg/RPM-GPG-KEY-example"


@pytest.fixture(autouse=True)
def fresh_key_cache():
    keys.clear_cache()
    yield
    keys.clear_cache()


def deb_repo(key: str, os=DEBIAN_12, **kw) -> SignedRepository:
    return signed_repository(os, "example", URL, key=key, variable="example_repo.key",
                             keyring=KEYRING, **kw)


def rpm_repo(key: str, **kw) -> SignedRepository:
    return signed_repository(RHEL_9, "example", URL, key=key, variable="example_repo.key",
                             description="Example", options={"repo_gpgcheck": "1"}, **kw)


DEB_FRESH = {AptSources(): {}, AptKeyring(KEYRING): None}
RPM_FRESH = {DnfRepoFiles(): {}, AptKeyring(RPM_KEY): None}


def same(a: list[Change], b: list[Change]) -> bool:
    return [c.to_json() for c in a] == [c.to_json() for c in b] and \
        [[s.stdin for s in c.steps] for c in a] == [[s.stdin for s in c.steps] for c in b]


def test_apt_family_plans_the_apt_repository_with_the_key(tmp_path: Path) -> None:
    op = deb_repo(make_key_file(tmp_path))
    assert op.label == "apt repository example"
    assert op.facts() == [AptSources(), AptKeyring(KEYRING)]
    expected = apt.apt_repository("example", URL, "/", key=ARMORED_KEY, keyring=KEYRING)
    assert same(op.plan(FactView(DEB_FRESH)), expected.plan(FactView(DEB_FRESH)))
    converged = {AptSources(): {"/etc/apt/sources.list.d/example.list": expected.content()},
                 AptKeyring(KEYRING): KEY_SHA256}
    assert op.plan(FactView(converged)) == []


def test_apt_options_reach_the_source(tmp_path: Path) -> None:
    op = deb_repo(make_key_file(tmp_path), os=UBUNTU_2404, suite="noble",
                  components=["stable"], lock_timeout=30)
    key_change, source = op.plan(FactView(DEB_FRESH))
    assert source.diff.after.endswith(f"deb [signed-by={KEYRING}] {URL} noble stable\n")
    assert "DPkg::Lock::Timeout=30" in source.steps[-1].command.shell()


def test_dnf_family_plans_the_dnf_repository_with_the_key(tmp_path: Path) -> None:
    op = rpm_repo(make_key_file(tmp_path))
    assert op.label == "dnf repository example"
    assert op.facts() == [DnfRepoFiles(), AptKeyring(RPM_KEY)]
    expected = dnf.repository("example", URL, description="Example", key=ARMORED_KEY,
                              options={"repo_gpgcheck": "1"})
    assert same(op.plan(FactView(RPM_FRESH)), expected.plan(FactView(RPM_FRESH)))
    converged = {DnfRepoFiles(): {"/etc/yum.repos.d/example.repo": expected.text},
                 AptKeyring(RPM_KEY): ARMORED_SHA256}
    assert op.plan(FactView(converged)) == []


def test_the_key_is_read_when_planning_once_per_run(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    real = keys._load
    monkeypatch.setattr(keys, "_load", lambda *a: loads.append(a[0]) or real(*a))
    source = make_key_file(tmp_path)
    ops = [deb_repo(source), rpm_repo(source)]
    assert [op.facts() for op in ops] and loads == []   # built and gathered without it
    for op, facts in zip(ops, (DEB_FRESH, RPM_FRESH), strict=True):
        op.plan(FactView(facts))
    assert loads == [source]


def test_unreadable_key_apt_is_blocked_and_the_source_still_checked(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.asc")
    op = deb_repo(missing, what="the example repository")
    blocked, source = op.plan(FactView(DEB_FRESH))
    assert (blocked.resource, blocked.action, blocked.steps) == (
        "signing key of the example repository", "check", [])
    assert blocked.blocked.startswith(
        f"cannot read the signing key of the example repository from {missing}: ")
    assert "set example_repo.key to a reachable URL" in blocked.blocked
    assert blocked.unknown is None, "the op does not know the mode: the engine decides"
    # no keyring write, but the source line, signed by the keyring's path
    assert source.resource == "apt source /etc/apt/sources.list.d/example.list"
    assert source.diff.after.endswith(f"deb [signed-by={KEYRING}] {URL} /\n")


def test_unreadable_key_dnf_is_blocked_alone(tmp_path: Path) -> None:
    [blocked] = rpm_repo(str(tmp_path / "missing.asc")).plan(FactView(RPM_FRESH))
    assert blocked.resource == f"signing key of the repository {URL}"
    assert "example_repo.key" in (blocked.blocked or "")


def test_a_file_that_is_no_key_is_blocked(tmp_path: Path) -> None:
    truncated = tmp_path / "key.asc"
    truncated.write_text(ARMORED_KEY.split("-----END")[0])
    [blocked, _] = deb_repo(str(truncated)).plan(FactView(DEB_FRESH))
    assert blocked.blocked.startswith(
        f"the signing key of the repository {URL} from {truncated} is not an OpenPGP public "
        "key: armored key has no END line")
    binary = tmp_path / "key.gpg"
    binary.write_bytes(b"\x99\xff\xfe binary")
    [blocked] = rpm_repo(str(binary)).plan(FactView(RPM_FRESH))
    assert "is not an ASCII-armored key" in (blocked.blocked or "")


def test_unknown_family_is_refused() -> None:
    from gpuprov.facts.system import OsInfo
    with pytest.raises(GpuprovError, match="no package manager known for 'Alpine"):
        signed_repository(OsInfo("alpine", "3.20", pretty_name="Alpine Linux v3.20"), "x", URL,
                          key=ARMORED_KEY, variable="x.key")


def test_settle_blocked_unknown_in_check_reasons_in_apply() -> None:
    def changes() -> list[Change]:
        return [Change("a", "create", "a"), Change("b", "check", "b", blocked="no key"),
                Change("c", "check", "c", blocked="no net", unknown="already said")]
    checked = changes()
    assert settle_blocked(checked, check=True) is None
    assert [c.unknown for c in checked] == [None, "no key; apply would stop here",
                                            "already said"]
    assert settle_blocked(changes(), check=False) == "no key; no net"
    assert settle_blocked([Change("a", "create", "a")], check=False) is None


def test_keyring_sha_is_of_the_dearmored_key(tmp_path: Path) -> None:
    key_change, _ = deb_repo(make_key_file(tmp_path)).plan(FactView(DEB_FRESH))
    assert hashlib.sha256(key_change.steps[0].stdin).hexdigest() == KEY_SHA256
