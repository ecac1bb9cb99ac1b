"""One Secret type end to end (issue 14): a hostile secret value, `!secret` or
secret by its name, never rendered as a template and never shown by what is
derived from it (variables, role templates, file ops, diffs, reports)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gpuprov.command import MASK, Command, Secret, mask_text
from gpuprov.engine.context import TaskContext
from gpuprov.facts.base import FactView
from gpuprov.facts.files import FileInfo
from gpuprov.model.inventory import Host
from gpuprov.model.secret_names import is_secret_name
from gpuprov.model.vars import HostVars, build_host_vars
from gpuprov.model.yamlfile import load_yaml_string
from gpuprov.ops.files import file, template
from tests.unit.role_harness import system_for

#: a value that would change if rendered as Jinja, and is easy to grep for
HOSTILE = "s3cr3t-{{7*7}}-VALUE"
RENDERED = "s3cr3t-49-VALUE"


def leaks(text: str) -> bool:
    return "s3cr3t" in text


def test_one_secret_type() -> None:
    from gpuprov.model import yamlfile
    assert not hasattr(yamlfile, "Secret") or yamlfile.Secret is Secret
    value = load_yaml_string(f"pw: !secret '{HOSTILE}'\n")["pw"]
    assert type(value) is Secret and value == HOSTILE and value.value == HOSTILE
    assert not leaks(repr(value)) and not leaks(Command("echo", value).display())
    assert f"'{HOSTILE}'" in Command("echo", value).shell()


@pytest.mark.parametrize("name", [
    "db_password", "jupyter_password_hash", "ansible_ssh_pass", "ansible_become_pass",
    "ansible_become_password", "ansible_sudo_pass", "api_key", "aws_secret_access_key",
    "ssh_key_passphrase", "registry_token", "client_secret", "smtp_passwd", "API_KEY"])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "jupyter_tls_key", "nvidia_repo_key", "cuda_gpg_key", "server_public_key", "key",
    "jupyter_token_file", "sshd_rsa_host_key_bits", "onboard_authorized_keys",
    "sshd_password_authentication", "ansible_user", "gpu_devices", "keyboard"])
def test_not_secret_names(name: str) -> None:
    assert not is_secret_name(name)


def test_secret_value_is_taken_literally() -> None:
    data = load_yaml_string(f"pw: !secret '{HOSTILE}'\nbroken: !secret 'a{{{{b'\n")
    hv = HostVars(data)
    assert hv["pw"] == HOSTILE and hv["broken"] == "a{{b"  # a lone `{{` does not break
    assert HOSTILE in hv.secret_values()


def test_value_derived_from_a_secret_is_secret() -> None:
    hv = HostVars({"db_password": "s3cr3t-x", "db_url": "pg://u:{{ db_password }}@h/db",
                   "db_b64": "{{ db_password | upper }}", "plain": "{{ 'x' }}"})
    assert isinstance(hv["db_password"], Secret)  # secret by its name
    assert isinstance(hv["db_url"], Secret) and hv.is_secret("db_url")
    assert isinstance(hv["db_b64"], Secret)       # derived through a filter, too
    assert not isinstance(hv["plain"], Secret) and not hv.is_secret("plain")
    assert set(hv.secret_values()) >= {"s3cr3t-x", "pg://u:s3cr3t-x@h/db", "S3CR3T-X"}


def context(tmp_path: Path, **vars: object) -> TaskContext:
    (tmp_path / "templates").mkdir(exist_ok=True)
    host = Host("gpu-01", vars=dict(vars))
    return TaskContext(host, build_host_vars(host, role="r"), system_for("debian12"),
                       FactView({}), "r", tmp_path)


def plan_file(op: object, cur: FileInfo | None = None) -> list:
    return op.plan(FactView({op.fact: cur}))  # type: ignore[attr-defined]


def test_ctx_render_of_a_secret_makes_a_secret_file(tmp_path: Path) -> None:
    ctx = context(tmp_path, app_pw=Secret(HOSTILE), user="ann")
    (tmp_path / "templates" / "app.conf.j2").write_text("user={{ user }}\npw={{ app_pw }}\n")
    text = ctx.render("app.conf.j2")
    assert isinstance(text, Secret) and text == f"user=ann\npw={HOSTILE}\n"
    old = b"pw=old-s3cr3t\n"
    [change] = plan_file(file("/etc/app.conf", text, mode="0600"),
                         FileInfo(type="file", owner="root", group="root", mode="0600", uid=0,
                                  gid=0, size=len(old), sha256=hashlib.sha256(old).hexdigest(),
                                  content=old))
    assert change.steps[0].stdin == f"user=ann\npw={HOSTILE}\n".encode()
    shown = change.diff.unified() + json.dumps(change.to_json()) + repr(change)
    assert not leaks(shown) and MASK in change.diff.unified()
    digest = hashlib.sha256(change.steps[0].stdin).hexdigest()
    assert digest not in shown  # a digest would let a reader test guesses offline


def test_ctx_render_without_secret_is_plain(tmp_path: Path) -> None:
    ctx = context(tmp_path, app_pw=Secret(HOSTILE), user="ann")
    (tmp_path / "templates" / "motd.j2").write_text("hello {{ user }}\n")
    assert type(ctx.render("motd.j2")) is str


def test_template_op_shares_the_renderer(tmp_path: Path) -> None:
    ctx = context(tmp_path, api_key="s3cr3t-k", host_label="gpu")
    (tmp_path / "u.j2").write_text("key={{ api_key | upper }}\n")
    op = template("/etc/u", tmp_path / "u.j2", ctx.vars)
    assert op.secret and op.content == b"key=S3CR3T-K\n"
    [change] = plan_file(op)
    assert not leaks(json.dumps(change.to_json()).lower())


def test_mask_text_masks_longest_first() -> None:
    assert mask_text("a s3cr3t-x b s3cr3t", ["s3cr3t", "s3cr3t-x", ""]) == f"a {MASK} b {MASK}"


def test_an_error_rendering_a_secret_variable_never_shows_its_text() -> None:
    from gpuprov.errors import InventoryError
    hv = HostVars({"db_password": "s3cr3t-{{ 1 / 0 }}"})
    with pytest.raises(InventoryError) as err:
        hv["db_password"]
    assert "db_password" in str(err.value) and not leaks(str(err.value))
