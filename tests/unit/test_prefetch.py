"""engine/prefetch.py: a host's last asked facts, kept on the controller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuprov.engine.prefetch import FactPlans, decode, default_cache_dir, encode
from gpuprov.facts.apt import AptCandidates, DebPackages
from gpuprov.facts.base import parse_batch
from gpuprov.facts.files import FileState
from gpuprov.facts.system import KernelRelease


def test_facts_survive_json_with_their_tuples_and_keyword_fields() -> None:
    for fact in (DebPackages(), AptCandidates(("a", "b")), KernelRelease(),
                 FileState("/etc/x", True, 1024, sudo=True)):
        entry = encode(fact)
        assert entry is not None and decode(entry) == fact


def test_unknown_classes_and_bad_arguments_are_dropped() -> None:
    assert decode({"fact": "gpuprov.facts.gone:Old", "args": {}}) is None
    assert decode({"fact": "gpuprov.facts.system:KernelRelease", "args": {"x": 1}}) is None
    assert decode("garbage") is None


def test_a_plan_is_per_host_and_role_set_and_written_private(tmp_path: Path) -> None:
    plans = FactPlans(tmp_path, [Path("/roles/a")])
    plans.save("h1", [DebPackages(), KernelRelease(), DebPackages()])
    assert plans.load("h1") == [DebPackages(), KernelRelease()]
    assert plans.load("h2") == []
    assert FactPlans(tmp_path, [Path("/roles/b")]).load("h1") == []
    [path] = (tmp_path / "prefetch").iterdir()
    assert path.stat().st_mode & 0o777 == 0o600
    # a file others may write names what runs on the host: ignored
    os.chmod(path, 0o666)
    assert plans.load("h1") == []
    os.chmod(path, 0o600)
    path.write_text("{not json")
    assert plans.load("h1") == []
    assert FactPlans(None, []).load("h1") == []


def test_the_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("GPUPROV_CACHE_DIR", "off")
    assert default_cache_dir() is None
    monkeypatch.setenv("GPUPROV_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("GPUPROV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "gpuprov"


def test_a_lenient_batch_leaves_out_what_it_cannot_parse() -> None:
    marker = "@@gpuprov-x"
    facts = [KernelRelease(), DebPackages()]
    out = (f"{marker} begin 0\n6.1.0\n{marker} end 0 0\n"
           f"{marker} begin 1\n\n{marker} end 1 notanumber\n")
    got = parse_batch(facts, out, marker, lenient=True)
    assert got == {KernelRelease(): "6.1.0"}
