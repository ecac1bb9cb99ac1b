"""`gpuprov jupyter-url HOST [INVENTORY]`: the tunnel, the URL and how to log
in, from the inventory and the jupyter role's defaults; never a token or a
password hash; a clear error for a host that is not in the inventory."""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pytest

from tests.unit.cli_runner import gpuprov

HASH = ("argon2:$argon2id$v=19$m=10240,t=10,p=8$5tmfvE2LrjDV3PfuZLXXUQ"
        "$gJnSkf6a35kgY/s0l1pGz/DqxqJdtW1bLc9BMl3Y/54")
TOKEN_FILE = "/etc/gpuprov/jupyter/token"

INVENTORY = textwrap.dedent(f"""\
    all:
      vars:
        ansible_user: admin
      children:
        lab:
          hosts:
            gpu-01:
              ansible_host: 10.0.0.5
              ansible_port: 2200
            gpu-02:
              jupyter_password_hash: "{HASH}"
              jupyter_port: 9999
            gpu-03:
              jupyter_bind_address: 10.0.0.7
              jupyter_tls_cert: /etc/ssl/lab.crt
              jupyter_tls_key: /etc/ssl/private/lab.key
            gpu-04:
              jupyter_enabled: false
            gpu-05:
              jupyter_bind_address: 0.0.0.0
    """)


@pytest.fixture
def inventory(tmp_path: Path) -> str:
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    return str(path)


def test_token_host_gets_tunnel_url_and_where_to_read_the_token(inventory: str) -> None:
    code, out, err = gpuprov("jupyter-url", "gpu-01", inventory)
    assert (code, err) == (0, "")
    assert out == textwrap.dedent(f"""\
        JupyterLab on gpu-01:
        1. Open a tunnel from your machine (leave it running):
           ssh -L 8888:localhost:8888 -p 2200 admin@10.0.0.5
        2. Browse to:
           http://localhost:8888/lab
        3. Log in with the token, readable on the host by root and the members of \
gpuprov-jupyter (jupyter_token_readers: none):
           sudo cat {TOKEN_FILE}
           (from your machine: ssh -t -p 2200 admin@10.0.0.5 'sudo cat {TOKEN_FILE}')
        """)


def test_a_token_reader_is_told_cat_without_sudo_others_sudo(inventory: str) -> None:
    path = Path(inventory)
    path.write_text(INVENTORY + "      vars:\n        jupyter_token_readers: [alice, bob]\n")
    code, out, _ = gpuprov("jupyter-url", "gpu-01", inventory, "--user", "alice")
    assert code == 0
    assert out.endswith(textwrap.dedent(f"""\
        3. Log in with the token, readable by you as a member of the group gpuprov-jupyter:
           cat {TOKEN_FILE}
           (from your machine: ssh -p 2200 alice@10.0.0.5 'cat {TOKEN_FILE}')
        """))
    code, out, _ = gpuprov("jupyter-url", "gpu-01", inventory, "--user", "carol")
    assert code == 0
    assert ("readable on the host by root and the members of gpuprov-jupyter "
            "(jupyter_token_readers: alice, bob):\n"
            f"   sudo cat {TOKEN_FILE}\n") in out


def test_a_token_file_with_spaces_and_semicolons_is_quoted(inventory: str) -> None:
    hostile = "/etc/gpuprov/my token;touch /tmp/pwned"
    Path(inventory).write_text(INVENTORY + f"      vars:\n        jupyter_token_file: "
                                           f"'{hostile}'\n")
    code, out, _ = gpuprov("jupyter-url", "gpu-01", inventory)
    assert code == 0
    quoted = "'/etc/gpuprov/my token;touch /tmp/pwned'"
    assert f"   sudo cat {quoted}\n" in out
    # one word for ssh, which the remote shell splits back into sudo, cat, the path
    ssh_line = out.splitlines()[-1].removeprefix("   (from your machine: ").removesuffix(")")
    *ssh, remote = shlex.split(ssh_line)
    assert ssh == ["ssh", "-t", "-p", "2200", "admin@10.0.0.5"]
    assert shlex.split(remote) == ["sudo", "cat", hostile]


def test_password_host_says_password_and_never_shows_the_hash(inventory: str) -> None:
    code, out, _ = gpuprov("jupyter-url", "gpu-02", inventory, "--user", "alice")
    assert code == 0
    assert "ssh -L 9999:localhost:9999 alice@gpu-02\n" in out
    assert "http://localhost:9999/lab\n" in out
    assert out.endswith("3. Log in with your Jupyter password.\n")
    assert "argon2" not in out and "token" not in out


def test_tls_host_on_its_own_address_needs_no_tunnel(inventory: str) -> None:
    code, out, _ = gpuprov("jupyter-url", "gpu-03", inventory)
    assert code == 0
    assert out.startswith("JupyterLab on gpu-03:\n1. Browse to (published with TLS, no tunnel; "
                          "the certificate must name the host):\n   https://gpu-03:8888/lab\n"
                          "2. Log in with the token")
    assert "ssh -L" not in out


@pytest.mark.parametrize(("host", "message"), [
    ("gpu-99", "error: no host 'gpu-99' in {inv}\n  hint: hosts: gpu-01, gpu-02, gpu-03, "
               "gpu-04, gpu-05\n"),
    ("gpu-04", "error: gpu-04: Jupyter is disabled there (jupyter_enabled: false)\n"),
    # where the variable was set: the inventory's line of jupyter_bind_address
    ("gpu-05", "error: {inv}:20: gpu-05: jupyter_bind_address: publishing Jupyter on a "
               "non-loopback "
               "address needs TLS\n"),
])
def test_unknown_disabled_or_misconfigured_host_is_one_clear_error(
        inventory: str, host: str, message: str) -> None:
    code, out, err = gpuprov("jupyter-url", host, inventory)
    assert code == 1 and out == ""
    assert err.startswith(message.format(inv=inventory))


def test_inventory_yml_in_the_current_directory_is_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    monkeypatch.chdir(tmp_path)
    code, out, _ = gpuprov("jupyter-url", "gpu-01")
    assert code == 0 and "admin@10.0.0.5" in out
