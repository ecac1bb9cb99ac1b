"""The README as a new user follows it (issue 17's acceptance): command 1 in
a fresh `git clone`, then every quick-start line in order, literally, in the
same shell, against fleet hosts, each with its documented exit code.

Both are read from README.md (tests/readme_blocks.py), never copied here.
What the test does for the user:
- the "edit hosts, users, keys" step: the clone's inventory.example.yml (what
  the quick start copies) is replaced by an inventory of two fresh fleet
  hosts (a lab one, for `-l lab`) with the stand-in repositories, the suite's
  key and its known_hosts;
- `pip install .` runs offline: no pip configuration or index, only wheels
  repacked from this suite's own venv (tests/wheelhouse.py), as
  PIP_NO_INDEX / PIP_FIND_LINKS in the environment, so the command stays
  literal.
Command 1 checks THIS machine, read-only, as it does for a user (the one
thing it writes is the run lock under /run/gpuprov, removed afterwards
when the test created it): its exit code is
whatever the exit code table says for this machine's state, so any of
drift-check's codes for a checked host is accepted, never a usage error or a
traceback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import wheelhouse
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.site import site_vars
from tests.readme_blocks import README, command_one, quick_start

REPO = Path(__file__).resolve().parents[2]
# drift-check's codes for a host that was checked (0 in sync, 2 its check
# failed, 3 drift; README "Exit codes"): not 1 (usage) or 4 (unreachable)
CHECKED_HERE = {0, 2, 3}
STEP = re.compile(r"^@@step (\d+) rc=(\d+)$", re.MULTILINE)
ON_PATH_BEFORE = "@@gpuprov was on PATH before command 1"


@pytest.fixture(scope="module")
def hosts(fleet: Fleet) -> list[FleetHost]:
    default = [h for h in fleet.hosts if h.variant == "default"]
    lab = next(h for h in default if "lab" in h.groups)
    other = next(h for h in default if "lab" not in h.groups)
    for host in (lab, other):
        fleet.reset(host)
    return [lab, other]


def fresh_clone(dest: Path) -> Path:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", head], check=True)
    return dest


def user_env(wheels: Path) -> dict[str, str]:
    """A shell without this suite's venv or pip settings, pip pointed at `wheels`."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "TERM"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PIP_")}
    suite_bin = Path(sys.prefix, "bin").resolve()
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() != suite_bin and not (Path(p) / "gpuprov").exists())
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1",
               PIP_PROGRESS_BAR="off", COLUMNS="160")
    return env


def script(lines: list[str]) -> str:
    """The lines in one shell, each followed by a marker with its exit code."""
    out = [f"command -v gpuprov >/dev/null && echo '{ON_PATH_BEFORE}'"]
    for number, line in enumerate(lines):
        out += [line, f'echo "@@step {number} rc=$?"']
    return "\n".join(out) + "\n"


def steps(output: str) -> list[tuple[int, str]]:
    """(exit code, output) of each step, in order."""
    found, start = [], 0
    for match in STEP.finditer(output):
        found.append((int(match.group(2)), output[start:match.start()]))
        start = match.end() + 1
    return found


@pytest.fixture
def machine_left_as_found() -> Iterator[None]:
    """Command 1's run lock is the one trace it leaves on this machine
    (/run/gpuprov, a tmpfs): removed again unless it was there before."""
    lock_dir = Path("/run/gpuprov")
    existed = lock_dir.exists()
    yield
    if not existed:
        shutil.rmtree(lock_dir, ignore_errors=True)


def test_command_one_then_the_quick_start_work_literally(
        fleet: Fleet, hosts: list[FleetHost], tmp_path: Path,
        machine_left_as_found: None) -> None:
    readme = README.read_text()
    first, quick = command_one(readme), quick_start(readme)
    clone = fresh_clone(tmp_path / "gpuprov")
    wheels = tmp_path / "wheels"
    # what `pip install .` needs: gpuprov's requirements and its build backend
    wheelhouse.build(wheels, [*wheelhouse.requirements("gpuprov"), "setuptools", "wheel"])
    inventory = fleet.inventory(hosts)
    inventory["all"]["vars"].update(site_vars(fleet.repo_url))
    (clone / "inventory.example.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))

    proc = subprocess.run(["bash", "-c", script([first, *quick])], cwd=clone,
                          env=user_env(wheels), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1500)
    output = proc.stdout
    assert ON_PATH_BEFORE not in output, "the test's shell must start without gpuprov"
    results = steps(output)
    assert len(results) == 1 + len(quick), output[-4000:]

    rc, out = results[0]
    assert rc in CHECKED_HERE and "Traceback" not in out, \
        f"command 1 `{first}` exited {rc}:\n{out[-4000:]}"
    for line, (rc, out) in zip(quick, results[1:], strict=True):
        # the quick start on healthy hosts: every line succeeds (apply 0 "all ok",
        # drift-check 0 "in sync", inventory and cp 0)
        assert rc == 0 and "Traceback" not in out, f"`{line}` exited {rc}:\n{out[-6000:]}"

    prom = (clone / "gpuprov.prom").read_text()
    for host in hosts:
        assert f'gpuprov_host_in_sync{{host="{host.name}"}} 1.0' in prom, prom
    assert (clone / "inventory.yml").read_text() == (clone / "inventory.example.yml").read_text()

