"""`gpuprov run PATTERN -- COMMAND` over real SSH (issue 17): a block per
host in inventory order, as the login user or (-b) as root through sudo,
the words after `--` quoted, a stopped host reported UNREACHABLE within -T,
and the exit code: 0, 2 the command failed on a host, 4 a host unreachable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gpuprov.model.inventory import load_inventory
from tests.fleet.faults import gpuprov
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet

TIMEOUT = 3
BLOCK = re.compile(r"^(\S+) \| (?:(FAILED|UNREACHABLE|ERROR) (?:\| )?)?(?:rc=(\d+) )?>>$",
                   re.MULTILINE)


@pytest.fixture(scope="module")
def work(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, list[FleetHost]]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:3]
    assert len(chosen) == 3
    work = tmp_path_factory.mktemp("adhoc")
    (work / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory(chosen), sort_keys=False))
    return work, chosen


def blocks(stdout: str) -> dict[str, tuple[str | None, str | None, str]]:
    """host -> (status word, rc, its output), in the order printed."""
    heads = list(BLOCK.finditer(stdout))
    out = {}
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(stdout)
        out[head.group(1)] = (head.group(2), head.group(3), stdout[head.end() + 1:end])
    return out


def in_inventory_order(work: Path, names: list[str]) -> list[str]:
    inventory, _ = load_inventory(str(work / "inventory.yml"))
    return [h.name for h in inventory.hosts.values() if h.name in names]


def test_two_hosts_and_a_stopped_one(work: tuple[Path, list[FleetHost]]) -> None:
    path, (first, second, gone) = work
    names = [first.name, second.name, gone.name]
    gone.stop()
    try:
        proc = gpuprov("run", ",".join(names), "-i", "inventory.yml", "-T", str(TIMEOUT),
                       "--", "hostname; id -un", cwd=path, timeout=120)
    finally:
        gone.start()
    assert proc.returncode == 4, proc.stdout + proc.stderr
    found = blocks(proc.stdout)
    assert list(found) == in_inventory_order(path, names), proc.stdout
    for host in (first, second):
        hostname = host.exec("hostname").stdout.strip()
        assert found[host.name] == (None, "0", f"{hostname}\nadmin\n"), proc.stdout
    status, rc, text = found[gone.name]
    assert (status, rc) == ("UNREACHABLE", None) and "timeout" in text, proc.stdout
    assert "3 hosts: 2 ok, 0 failed, 1 unreachable" in proc.stderr


def test_become_quoting_and_a_failure_on_one_host(work: tuple[Path, list[FleetHost]]) -> None:
    path, (first, second, _) = work
    pattern = f"{first.name},{second.name}"
    become = gpuprov("run", pattern, "-i", "inventory.yml", "--become", "--", "id", "-un",
                     cwd=path, timeout=120)
    assert become.returncode == 0, become.stdout + become.stderr
    assert {h: v for h, v in blocks(become.stdout).items()} == {
        first.name: (None, "0", "root\n"), second.name: (None, "0", "root\n")}
    # several words: each quoted, nothing re-read by a shell on the host
    words = gpuprov("run", first.name, "-i", "inventory.yml", "--", "printf", "%s|", "a b",
                    "$HOME", "x;false", cwd=path, timeout=120)
    assert words.returncode == 0, words.stdout + words.stderr
    # (a block always ends with a newline, even where the output did not)
    assert blocks(words.stdout)[first.name] == (None, "0", "a b|$HOME|x;false|\n")
    hostname = first.exec("hostname").stdout.strip()
    failing = gpuprov("run", pattern, "-i", "inventory.yml", "-b", "--",
                      f'test "$(hostname)" = {hostname} || {{ echo not me >&2; exit 3; }}',
                      cwd=path, timeout=120)
    assert failing.returncode == 2, failing.stdout + failing.stderr
    assert blocks(failing.stdout) == {first.name: (None, "0", ""),
                                      second.name: ("FAILED", "3", "not me\n")}
