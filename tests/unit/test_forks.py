"""-f/--forks: a number as given, or auto (the default): every host at once,
up to what the open-file limit and memory allow; -v and --help say which."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from gpuprov.engine import forks
from gpuprov.engine.forks import (
    AUTO,
    FDS_PER_HOST,
    FDS_RESERVED,
    MAX_FORKS,
    RSS_MIB_PER_HOST,
    Forks,
    auto_bound,
    raise_nofile,
    read_mem_available_mib,
    resolve_forks,
)
from tests.unit.cli_runner import gpuprov
from tests.unit.test_cli import Project, project  # noqa: F401  (the fixture)

PLENTY_FDS = 1 << 20
PLENTY_MIB = 64 * 1024.0


def resolve(value: int | str, hosts: int, nofile: int = PLENTY_FDS,
            mem: float | None = PLENTY_MIB) -> Forks:
    return resolve_forks(value, hosts, nofile=lambda needed: nofile,
                         mem_available_mib=lambda: mem)


def test_an_explicit_count_is_used_as_given() -> None:
    assert resolve(10, 64) == Forks(10)
    assert resolve(10, 3) == Forks(10)   # the executor never starts more workers than hosts
    assert str(Forks(10)) == "10"


@pytest.mark.parametrize("hosts", [1, 16, 64, 200])
def test_auto_runs_every_host_at_once_where_the_machine_allows(hosts: int) -> None:
    chosen = resolve(AUTO, hosts)
    assert chosen == Forks(hosts, auto=True)
    assert str(chosen) == f"auto ({hosts})"


def test_auto_never_goes_past_the_explicit_ceiling() -> None:
    assert resolve(AUTO, 2000).workers == MAX_FORKS


def test_auto_is_bounded_by_the_open_file_limit() -> None:
    # a 1024 soft limit the hard one does not let us raise
    assert resolve(AUTO, 400, nofile=1024).workers == (1024 - FDS_RESERVED) // FDS_PER_HOST
    assert resolve(AUTO, 16, nofile=1024).workers == 16


def test_auto_is_bounded_by_half_the_available_memory() -> None:
    mem = 100 * RSS_MIB_PER_HOST   # room for 50 hosts in half of it
    assert resolve(AUTO, 64, mem=mem).workers == 50
    assert resolve(AUTO, 64, mem=None).workers == 64   # not Linux: files bound it alone


def test_auto_keeps_one_worker_on_a_starved_machine() -> None:
    assert auto_bound(nofile=10, mem_available_mib=0.5) == 1
    assert resolve(AUTO, 8, nofile=10, mem=0.0) == Forks(1, auto=True)


def test_raise_nofile_lifts_the_soft_limit_up_to_the_hard_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"now": (1024, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])

    def setrlimit(which: int, value: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        limits["now"] = value
    monkeypatch.setattr(resource, "setrlimit", setrlimit)

    assert raise_nofile(512) == 1024 and limits["now"] == (1024, 4096)   # enough already
    assert raise_nofile(2000) == 2000 and limits["now"] == (2000, 4096)
    assert raise_nofile(9000) == 4096 and limits["now"] == (4096, 4096)  # never past hard


def test_raise_nofile_keeps_the_soft_limit_when_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (256, 8192))

    def refuse(which: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed")
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_nofile(1000) == 256


def test_raise_nofile_on_this_machine_never_lowers_the_limit() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_nofile(16) >= min(16, soft)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft


def test_mem_available_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32768000 kB\nMemAvailable:    2097152 kB\n")
    assert read_mem_available_mib(meminfo) == 2048.0
    meminfo.write_text("MemTotal:       32768000 kB\n")          # kernels before 3.14
    assert read_mem_available_mib(meminfo) is None
    assert read_mem_available_mib(tmp_path / "absent") is None


def test_resolve_reads_this_machine_by_default() -> None:
    chosen = resolve_forks(AUTO, 4)
    assert chosen.auto and 1 <= chosen.workers <= 4
    assert forks.read_mem_available_mib() is None or forks.read_mem_available_mib() > 0


# -- the command line ------------------------------------------------------------

@pytest.mark.parametrize("command", ["apply", "drift-check", "verify", "facts"])
def test_help_shows_auto_as_the_default(command: str) -> None:
    out = gpuprov(command, "--help")
    assert out.code == 0
    text = " ".join(out.stdout.split())
    assert "-f, --forks N|auto" in text and "[default: auto]" in text


@pytest.mark.parametrize("bad", ["0", "501", "many", "-3"])
def test_a_bad_forks_value_is_a_usage_error(project: Project, bad: str) -> None:  # noqa: F811
    out = project.run("drift-check", "-f", bad)
    assert out.code == 1 and "--forks" in out.stderr, out.both


def test_verbose_says_the_forks_auto_chose(project: Project) -> None:  # noqa: F811
    out = project.run("drift-check", "-v")
    assert "3 hosts, forks: auto (3)" in out.stderr, out.both


def test_verbose_says_an_explicit_forks_as_given(project: Project) -> None:  # noqa: F811
    out = project.run("apply", "-v", "--forks", "1")
    assert out.code == 0, out.both
    assert "3 hosts, forks: 1" in out.stderr, out.both
    assert "forks:" not in project.run("drift-check").stderr
