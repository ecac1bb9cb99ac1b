"""A hostile secret end to end through the real CLI (issue 14): a `!secret`
value used in a role template, in a derived variable, in a task's error and
as -K; it must appear in no output of apply, drift-check (every format, -o),
the --report file or `gpuprov inventory`, and reports are written 0600.
Hosts are `ansible_connection: local`, files go under tmp_path: no root."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import textwrap
from pathlib import Path

import pytest

from gpuprov.engine.connect import ConnectOptions
from gpuprov.engine.onboard import OnboardOptions
from tests.unit.cli_runner import Outcome, gpuprov

HOSTILE = "s3cr3t-{{7*7}}-VALUE"
ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name

TASKS = '''\
from gpuprov.ops.files import file


def tasks(ctx):
    v = ctx.vars
    yield file(f"{v['out_dir']}/app.conf", ctx.render("app.conf.j2"),
               owner=v["me"], group=v["my_group"], mode="0600")
    # a role that builds the content by hand: a plain str, no secret=True
    yield file(f"{v['out_dir']}/by-hand.conf", "pw=" + str(v["app_cred"]) + "\\n",
               owner=v["me"], group=v["my_group"], mode="0600")
    if v["fail_with_secret"]:
        # a careless role: the secret reaches an error message unmarked
        raise ctx.fail("cannot log in with " + str(v["app_cred"]))
'''


def leaked(text: str) -> list[str]:
    return [p for p in (HOSTILE, "s3cr3t-49-VALUE", "s3cr3t") if p in text]


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    role = tmp_path / "roles" / "vault"
    (role / "templates").mkdir(parents=True)
    (role / "tasks.py").write_text(TASKS)
    (role / "templates" / "app.conf.j2").write_text(
        "user=ann\npassword={{ app_cred }}\nurl={{ db_url }}\n")
    (role / "defaults.yml").write_text(textwrap.dedent(f"""\
        # where the file goes
        out_dir: {tmp_path / 'out'}
        # owner
        me: {ME}
        # group
        my_group: {MY_GROUP}
        # fail with the secret in the message
        fail_with_secret: false
        """))
    (tmp_path / "out").mkdir()
    (tmp_path / "site.yml").write_text("- hosts: all\n  roles: [vault]\n")
    (tmp_path / "hosts.yml").write_text(textwrap.dedent(f"""\
        all:
          vars:
            ansible_connection: local
            become: false
            app_cred: !secret '{HOSTILE}'
            db_url: "pg://ann:{{{{ app_cred }}}}@db/x"
            ansible_become_pass: '{HOSTILE}-become'
            api_key: '{HOSTILE}-api'
            aws_secret_access_key: '{HOSTILE}-aws'
            ssh_key_passphrase: '{HOSTILE}-pp'
            copied: 'x-{HOSTILE}-y'
            nested: {{user: ann, password: !secret '{HOSTILE}-n'}}
          hosts:
            h1:
        """))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> Outcome:
    return gpuprov(*args[:1], "hosts.yml", "-p", "site.yml", *args[1:])


def test_secret_in_a_template_is_in_the_file_and_in_no_output(project: Path) -> None:
    outputs: list[str] = []
    applied = run("apply", "--diff", "-v", "--report", "apply.json")
    assert applied.code == 0, applied.both
    written = (project / "out" / "app.conf").read_text()
    assert written == f"user=ann\npassword={HOSTILE}\nurl=pg://ann:{HOSTILE}@db/x\n"
    outputs += [applied.both, (project / "apply.json").read_text()]
    assert stat.S_IMODE((project / "apply.json").stat().st_mode) == 0o600
    assert (project / "out" / "by-hand.conf").read_text() == f"pw={HOSTILE}\n"
    # both files are secret: no digest of their content in the report
    assert "sha256" not in (project / "apply.json").read_text()

    (project / "out" / "app.conf").write_text(f"tampered {HOSTILE}\n")
    for fmt in ("table", "json", "prometheus"):
        shown = run("drift-check", "--format", fmt)
        assert shown.code == 3, shown.both
        to_file = run("drift-check", "--format", fmt, "-o", f"drift.{fmt}")
        assert to_file.code == 3, to_file.both
        assert stat.S_IMODE((project / f"drift.{fmt}").stat().st_mode) == 0o600
        outputs += [shown.both, to_file.both, (project / f"drift.{fmt}").read_text()]
    data = json.loads((project / "drift.json").read_text())
    assert data["hosts"]["h1"]["drift"][0]["resource"].endswith("app.conf")

    checked = run("apply", "--check", "--diff", "--report", "check.json")
    assert checked.code == 0, checked.both
    outputs += [checked.both, (project / "check.json").read_text()]
    assert "sha256" not in (project / "check.json").read_text()

    for args in (("--list",), ("--list", "-l", "h1")):
        inv = gpuprov("inventory", "hosts.yml", *args)
        assert inv.code == 0, inv.both
        outputs.append(inv.both)
        hostvars = json.loads(inv.stdout)["_meta"]["hostvars"]["h1"]
        assert hostvars["ansible_connection"] == "local" and hostvars["nested"]["user"] == "ann"
    for text in outputs:
        assert leaked(text) == [], text


def test_a_secret_in_an_error_message_is_masked(project: Path) -> None:
    failed = run("apply", "-e", "fail_with_secret=yes", "--report", "r.json", "-vv")
    assert failed.code == 2, failed.both
    assert "cannot log in with ********" in failed.both
    assert leaked(failed.both + (project / "r.json").read_text()) == []


def test_become_password_given_to_gpuprov_is_masked(project: Path) -> None:
    # -K's password reaches an output only through a careless role (here: the
    # same text as the !secret value it prints); masked all the same
    (project / "hosts.yml").write_text((project / "hosts.yml").read_text().replace(
        f"app_cred: !secret '{HOSTILE}'", "app_cred: plain-but-K"))
    failed = gpuprov("apply", "hosts.yml", "-p", "site.yml", "-K", "-e",
                     "fail_with_secret=yes", "--report", "r.json", stdin="plain-but-K\n")
    assert failed.code == 2, failed.both
    assert "cannot log in with ********" in failed.both
    assert "plain-but-K" not in failed.both + (project / "r.json").read_text()


def test_reprs_never_show_passwords(project: Path) -> None:
    options = ConnectOptions(become_password=HOSTILE, ssh_password=HOSTILE + "-ssh")
    onboard = OnboardOptions("h", "g", Path("i.yml"), password=HOSTILE,
                             become_password=HOSTILE, extra_vars={"db_password": HOSTILE})
    from gpuprov.connectors.ssh import SshSettings
    from gpuprov.engine.connect import connector_for
    from gpuprov.model.inventory import Host
    conn = connector_for(Host("h", vars={"ansible_host": "127.0.0.1"}), options)
    texts = [repr(options), repr(onboard), str(options), repr(getattr(conn, "settings", "")),
             repr(SshSettings("h", password=HOSTILE))]
    assert [t for t in texts if leaked(t)] == []
