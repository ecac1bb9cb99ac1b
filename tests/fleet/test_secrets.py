"""Secrets stay secret over real SSH (issue 14's acceptance): a `!secret`
variable used in a role's template reaches the file on a fleet host, and
its value appears in no output: stdout and stderr of apply (with --diff and
-v), the --report file, drift-check (table, JSON, Prometheus, -o files) and
`gpuprov inventory`. Reports and drift files are 0600."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import gpuprov

#: a value that would change if it were rendered as Jinja, easy to grep for
HOSTILE = "s3cr3t-{{7*7}}-VALUE"
TARGET = "/etc/gpuprov-secret-test.conf"

TASKS = '''\
from gpuprov.ops.files import file


def tasks(ctx):
    yield file(ctx.vars["vault_file"], ctx.render("app.conf.j2"), mode="0600")
'''


def leaks(text: str) -> list[str]:
    return [p for p in (HOSTILE, "s3cr3t-49-VALUE", "s3cr3t") if p in text]


@pytest.fixture(scope="module")
def host(fleet: Fleet) -> FleetHost:
    return next(h for h in fleet.hosts if h.variant == "default")


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, host: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("secrets")
    inventory = fleet.inventory([host])
    inventory["all"]["vars"]["app_cred"] = "PLACEHOLDER"
    text = yaml.safe_dump(inventory, sort_keys=False)
    # !secret cannot come out of safe_dump: put the tag in by hand
    text = text.replace("app_cred: PLACEHOLDER", f"app_cred: !secret '{HOSTILE}'")
    (work / "inventory.yml").write_text(text)
    role = work / "roles" / "vault"
    (role / "templates").mkdir(parents=True)
    (role / "tasks.py").write_text(TASKS)
    (role / "defaults.yml").write_text(f"# the file the secret goes to\nvault_file: {TARGET}\n")
    (role / "templates" / "app.conf.j2").write_text(textwrap.dedent("""\
        # written by gpuprov's secrets test
        user=ann
        password={{ app_cred }}
        """))
    (work / "site.yml").write_text("- hosts: all\n  roles: [vault]\n")
    return work


def test_a_secret_in_a_template_reaches_the_host_and_no_output(
        fleet: Fleet, host: FleetHost, workdir: Path) -> None:
    host.exec(f"rm -f {TARGET}")
    outputs: dict[str, str] = {}
    args = ("inventory.yml", "-p", "site.yml")
    try:
        applied = gpuprov("apply", *args, "--diff", "-v", "--report", "apply.json",
                          cwd=workdir)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        outputs["apply"] = applied.stdout + applied.stderr
        assert host.read_file(TARGET) == (
            f"# written by gpuprov's secrets test\nuser=ann\npassword={HOSTILE}\n")
        assert host.exec(f"stat -c '%a %U' {TARGET}").stdout.strip() == "600 root"

        host.exec(f"sed -i 's/^user=ann/user=bob/' {TARGET}")  # drift, secret still inside
        for fmt in ("table", "json", "prometheus"):
            shown = gpuprov("drift-check", *args, "--format", fmt, cwd=workdir)
            assert shown.returncode == 3, shown.stdout + shown.stderr
            written = gpuprov("drift-check", *args, "--format", fmt, "-o", f"drift.{fmt}",
                              cwd=workdir)
            assert written.returncode == 3, written.stdout + written.stderr
            outputs[f"drift {fmt}"] = shown.stdout + shown.stderr + written.stdout + written.stderr
        checked = gpuprov("apply", *args, "--check", "--diff", "-vv", "--report", "check.json",
                          cwd=workdir)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        outputs["check"] = checked.stdout + checked.stderr

        inventory = gpuprov("inventory", "inventory.yml", "--list", cwd=workdir)
        assert inventory.returncode == 0, inventory.stderr
        outputs["inventory"] = inventory.stdout + inventory.stderr

        for name in ("apply.json", "check.json", "drift.table", "drift.json",
                     "drift.prometheus"):
            path = workdir / name
            outputs[name] = path.read_text()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert "sha256" not in outputs["apply.json"] + outputs["check.json"]
        assert "secret content changed" in outputs["check.json"]
        assert HOSTILE in host.read_file(TARGET)
        assert {name: leaks(text) for name, text in outputs.items() if leaks(text)} == {}
    finally:
        host.exec(f"rm -f {TARGET}")
