"""What `gpuprov inventory` shows, below the CLI: ansible-inventory's --list
shape with --limit and --export, --graph with --limit, --host; and the checks
the loader makes on a file before reading it as an inventory (text, not a
playbook)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpuprov.errors import InventoryError
from gpuprov.model.inventory import Inventory
from gpuprov.model.inventory_loader import looks_like_playbook
from gpuprov.model.yamlfile import decode_text, load_yaml_string

TEXT = """\
all:
  vars: {site: lab, db_password: hunter2}
  hosts:
    bastion:
  children:
    lab:
      vars: {gpus: 2, api_token: !secret tok}
      hosts:
        ws-01:
      children:
        gpu:
          hosts: {ws-02: }
    cloud:
      hosts: {vm-1: }
"""


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    path = tmp_path / "inventory.yml"
    path.write_text(textwrap.dedent(TEXT))
    return Inventory.load(path)


def test_list_limited_keeps_the_groups_that_hold_the_hosts(inv: Inventory) -> None:
    out = inv.to_list_json(only=["ws-02"])
    assert list(out["_meta"]["hostvars"]) == ["ws-02"]
    assert out["all"] == {"children": ["lab"]}
    assert out["lab"] == {"children": ["gpu"]}     # ws-01 left out, lab kept for gpu
    assert out["gpu"] == {"hosts": ["ws-02"]}
    assert "cloud" not in out and "ungrouped" not in out


def test_list_export_adds_each_groups_own_vars_masked(inv: Inventory) -> None:
    out = inv.to_list_json(export=True)
    assert out["all"]["vars"] == {"site": "lab", "db_password": "********"}
    assert out["lab"]["vars"] == {"gpus": 2, "api_token": "********"}
    assert "vars" not in out["cloud"] and "vars" not in inv.to_list_json()["lab"]


def test_graph_limited(inv: Inventory) -> None:
    assert inv.graph(only=["vm-1", "bastion"]) == textwrap.dedent("""\
        @all:
          |--@cloud:
          |  |--vm-1
          |--@ungrouped:
          |  |--bastion""")


def test_host_json_is_merged_and_masked(inv: Inventory) -> None:
    assert inv.host_json("ws-02") == {"site": "lab", "db_password": "********", "gpus": 2,
                                      "api_token": "********"}
    with pytest.raises(InventoryError, match="did you mean 'ws-01'"):
        inv.host_json("ws-1")


@pytest.mark.parametrize(("text", "playbook"), [
    ("- hosts: all\n  roles: [base]\n", True),
    ("- name: x\n  roles: [base]\n", True),
    ("hosts: all\n", True),
    ("roles: [base]\n", True),
    ("hosts:\n  h1:\n", False),       # an inventory missing its all: (another error)
    ("- a\n- b\n", False),
    ("all:\n  hosts:\n", False),
])
def test_looks_like_playbook(text: str, playbook: bool) -> None:
    assert looks_like_playbook(load_yaml_string(text)) is playbook


def test_decode_text_names_the_first_bad_byte() -> None:
    assert decode_text("ok: é\n".encode(), "f.yml") == "ok: é\n"
    with pytest.raises(InventoryError) as bad:
        decode_text(b"a: 1\nb: \xc3\x28\n", "f.yml")
    assert str(bad.value).startswith("f.yml:2: not a text file: byte 0xc3, not UTF-8 at "
                                     "byte offset 8")
    with pytest.raises(InventoryError, match=r"f.yml:1: not a text file: a NUL byte at "
                                             r"byte offset 1"):
        decode_text(b"a\x00\xff", "f.yml")
