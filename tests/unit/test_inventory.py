"""inventory: Ansible-compatible YAML -> Host objects; every error names file:line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from gpuprov.errors import InventoryError
from gpuprov.model.inventory import Inventory, expand_host_range

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data" / "inventory"


def write(base: Path, rel: str, text: str) -> Path:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> Inventory:
    return Inventory.load(write(tmp_path, "inventory.yml", text))


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, "inventory.yml", text)
    with pytest.raises(InventoryError) as e:
        Inventory.load(path)
    return str(e.value).replace(str(path), "INV")


# --- structure ------------------------------------------------------------

def test_example_inventory_loads():
    inv = Inventory.load(REPO / "inventory.example.yml")
    assert inv.warnings == []
    assert {"lab", "cloud", "cluster"} <= set(inv.groups)
    assert len(inv.select("lab")) >= 2
    for host in inv.select("cloud"):
        assert host.ssh_user == "ubuntu" and host.become is True
    for host in inv.select("cluster"):
        assert host.vars["container_runtime"] == "containerd"
    assert all(h.vars["container_runtime"] == "docker" for h in inv.select("lab"))
    assert inv.hosts["ws-03.lab"].ssh_port == 2222


def test_fixture_inventory_with_vars_dirs():
    inv = Inventory.load(DATA / "hosts.yml")
    ws1 = inv.hosts["ws-01"]
    assert ws1.groups == ["all", "lab", "gpu"]
    assert ws1.vars["from_dir"] == "lab/20-b.yml"  # directory files load in name order
    assert ws1.vars["from_file"] == "lab.yml"
    assert ws1.vars["level"] == "host_vars"
    assert ws1.address == "10.0.0.1"
    assert any("'nosuchgroup'" in w for w in inv.warnings)


def test_nested_groups_hosts_under_all_and_several_groups(tmp_path):
    inv = load(tmp_path, """\
        all:
          hosts:
            bastion:
          children:
            lab:
              hosts:
                ws-01:
                ws-02:
              children:
                gpu:
                  children:
                    a100:
                      hosts:
                        ws-02:
            cluster:
              hosts:
                ws-02:
                node-1:
        """)
    assert list(inv.hosts) == ["bastion", "ws-01", "ws-02", "node-1"]
    assert inv.hosts["ws-02"].groups == ["all", "cluster", "lab", "gpu", "a100"]
    assert inv.hosts["bastion"].groups == ["all", "ungrouped"]
    assert inv.groups["a100"].depth == 3
    assert [h.name for h in inv.select("lab")] == ["ws-01", "ws-02"]


def test_top_level_groups_are_children_of_all(tmp_path):
    inv = load(tmp_path, "lab:\n  hosts:\n    ws-01:\ncloud:\n  hosts:\n    vm-1:\n")
    assert inv.groups["all"].children == ["ungrouped", "lab", "cloud"]
    assert inv.hosts["vm-1"].groups == ["all", "cloud"]


def test_empty_inventory_warns(tmp_path):
    inv = load(tmp_path, "# nothing yet\n")
    assert inv.hosts == {} and "empty" in inv.warnings[0]


def test_host_ranges(tmp_path):
    inv = load(tmp_path, "all:\n  hosts:\n    ws-[01:03].lab:\n      x: 1\n    db-[a:b]:\n")
    assert list(inv.hosts) == ["ws-01.lab", "ws-02.lab", "ws-03.lab", "db-a", "db-b"]
    assert inv.hosts["ws-02.lab"].vars == {"x": 1}
    assert expand_host_range("n[1:5:2]") == ["n1", "n3", "n5"]
    assert expand_host_range("r[1:2]-[a:b]") == ["r1-a", "r1-b", "r2-a", "r2-b"]


def test_bad_host_range_names_line(tmp_path):
    msg = load_error(tmp_path, "all:\n  hosts:\n    ws-[01:zz]:\n")
    assert msg.startswith("INV:3: bad host range")


# --- variable precedence --------------------------------------------------

def test_precedence_all_parent_child_host(tmp_path):
    inv = load(tmp_path, """\
        all:
          vars: {a: all, b: all, c: all, d: all}
          children:
            lab:
              vars: {b: lab, c: lab, d: lab}
              children:
                gpu:
                  vars: {c: gpu, d: gpu}
                  hosts:
                    ws-01: {d: host}
        """)
    assert inv.hosts["ws-01"].vars == {"a": "all", "b": "lab", "c": "gpu", "d": "host"}
    assert inv.hosts["ws-01"].var_origins["c"].line == 8


def test_same_depth_groups_ordered_by_name(tmp_path):
    # Ansible's rule: depth, then name; the later name wins, whatever the file order.
    inv = load(tmp_path, """\
        all:
          children:
            zeta: {hosts: {h: }, vars: {x: zeta}}
            alpha: {hosts: {h: }, vars: {x: alpha}}
        """)
    assert inv.hosts["h"].groups == ["all", "alpha", "zeta"]
    assert inv.hosts["h"].vars["x"] == "zeta"


def test_group_vars_files_win_over_inline_and_host_vars_win_over_groups(tmp_path):
    write(tmp_path, "group_vars/all.yml", "a: file-all\n")
    write(tmp_path, "group_vars/lab.yaml", "b: file-lab\n")
    write(tmp_path, "group_vars/lab/10.yml", "c: dir-10\n")
    write(tmp_path, "group_vars/lab/20.yml", "c: dir-20\n")
    write(tmp_path, "host_vars/ws-01.yml", "d: file-host\n")
    inv = load(tmp_path, """\
        all:
          vars: {a: inline-all, z: 1}
          children:
            lab:
              vars: {a: inline-lab, b: inline-lab, c: inline-lab}
              hosts:
                ws-01: {b: inline-host, d: inline-host}
        """)
    v = inv.hosts["ws-01"].vars
    assert v == {"a": "inline-lab", "z": 1, "b": "inline-host", "c": "dir-20",
                 "d": "file-host"}
    assert inv.hosts["ws-01"].var_origins["c"].file.endswith("20.yml")


def test_group_vars_for_unknown_group_is_a_warning(tmp_path):
    write(tmp_path, "group_vars/labb.yml", "x: 1\n")
    write(tmp_path, "host_vars/ws-09.yml", "x: 1\n")
    inv = load(tmp_path, "all:\n  children:\n    lab:\n      hosts:\n        ws-01:\n")
    assert len(inv.warnings) == 2
    assert "no group named 'labb'" in inv.warnings[0] and "did you mean 'lab'" in inv.warnings[0]
    assert "no host named 'ws-09'" in inv.warnings[1]


def test_bad_group_vars_file_names_file_and_line(tmp_path):
    gv = write(tmp_path, "group_vars/lab.yml", "x: 1\nansible_hots: 10.0.0.1\n")
    msg = load_error(tmp_path, "all:\n  children:\n    lab:\n      hosts:\n        ws-01:\n")
    assert msg.startswith(f"{gv}:2: unknown connection variable 'ansible_hots'")
    assert "did you mean 'ansible_host'" in msg


def test_group_vars_file_that_is_a_list(tmp_path):
    gv = write(tmp_path, "group_vars/lab.yml", "- x\n")
    msg = load_error(tmp_path, "all:\n  children:\n    lab:\n      hosts:\n        ws-01:\n")
    assert msg.startswith(f"{gv}:1: group_vars file must be a mapping")


# --- connection settings --------------------------------------------------

def test_connection_settings_and_ansible_aliases(tmp_path):
    inv = load(tmp_path, """\
        all:
          hosts:
            a:
              ansible_host: 10.0.0.1
              ansible_user: ubuntu
              ansible_port: 2222
              ansible_ssh_private_key_file: ~/.ssh/id_a
              ansible_become: true
            b:
              address: b.example.com
              ssh_user: admin
              ssh_port: 22
              ssh_private_key_file: /k
              become: false
            c:
        """)
    a, b, c = inv.hosts["a"], inv.hosts["b"], inv.hosts["c"]
    assert (a.address, a.ssh_user, a.ssh_port, a.ssh_private_key_file, a.become) == (
        "10.0.0.1", "ubuntu", 2222, "~/.ssh/id_a", True)
    assert (b.address, b.ssh_user, b.ssh_port, b.become) == ("b.example.com", "admin", 22, False)
    assert (c.address, c.ssh_user, c.ssh_port, c.become, c.connection) == (
        "c", None, None, None, "ssh")


def test_alias_at_higher_layer_beats_own_name_at_lower_layer(tmp_path):
    inv = load(tmp_path, """\
        all:
          vars: {ssh_user: admin, ansible_port: 2200}
          hosts:
            a: {ansible_user: ubuntu, ssh_port: 2201}
            b: {ssh_user: x, ansible_user: y}
        """)
    assert inv.hosts["a"].ssh_user == "ubuntu" and inv.hosts["a"].ssh_port == 2201
    assert inv.hosts["b"].ssh_user == "x"  # same layer: gpuprov's own name wins


def test_templated_connection_var(tmp_path):
    inv = load(tmp_path, """\
        all:
          vars: {ansible_host: "{{ inventory_hostname_short }}.lab.example.org", base: 2200}
          hosts:
            ws-01.lab: {ansible_port: "{{ base }}"}
        """)
    host = inv.hosts["ws-01.lab"]
    assert host.address == "ws-01.lab.example.org" and host.ssh_port == 2200


@pytest.mark.parametrize("value", ["ssh", "'22a'", "0", "70000", "true", "[22]", "2.5"])
def test_bad_port_names_file_and_line(tmp_path, value):
    msg = load_error(tmp_path, f"all:\n  hosts:\n    a:\n      x: 1\n      ansible_port: {value}\n")
    assert msg.startswith("INV:5: ansible_port must be a port number 1..65535")


def test_bad_templated_port_names_origin(tmp_path):
    msg = load_error(tmp_path, "all:\n  vars:\n    p: nope\n    ssh_port: '{{ p }}'\n"
                               "  hosts:\n    a:\n")
    assert msg.startswith("INV:4: ssh_port must be a port number")


@pytest.mark.parametrize("value", ["yes", "no", "on", "'1'"])
def test_become_must_be_a_real_boolean(tmp_path, value):
    msg = load_error(tmp_path, f"all:\n  vars:\n    become: {value}\n  hosts:\n    a:\n")
    assert msg.startswith("INV:3: become must be true or false")
    assert "yes/no/on/off are strings" in msg


@pytest.mark.parametrize("key,suggestion", [("ansible_hots", "ansible_host"),
                                            ("ssh_usr", "ssh_user"),
                                            ("ansible_usre", "ansible_user"),
                                            ("ssh_prot", "ssh_port"),
                                            ("adress", "address")])
def test_typos_of_connection_vars_are_errors(tmp_path, key, suggestion):
    msg = load_error(tmp_path, f"all:\n  hosts:\n    a:\n      {key}: x\n")
    assert msg.startswith(f"INV:4: unknown connection variable '{key}'")
    assert f"did you mean '{suggestion}'" in msg


@pytest.mark.parametrize("key", ["addresses", "ssh_allow_users", "jupyter_port", "become_user",
                                 "container_runtime", "data_dir", "nvidia_driver_branch"])
def test_ordinary_vars_are_not_mistaken_for_typos(tmp_path, key):
    assert load(tmp_path, f"all:\n  hosts:\n    a:\n      {key}: x\n").hosts["a"].vars[key] == "x"


def test_unsupported_ansible_vars_warn_only_when_they_matter(tmp_path):
    inv = load(tmp_path, """\
        all:
          vars:
            ansible_python_interpreter: /usr/bin/python3
            ansible_become_method: sudo
            ansible_become_user: root
          hosts:
            a: {ansible_become_user: postgres, ansible_connection: winrm}
            b: {ansible_ssh_pass: hunter2}
            c: {ansible_connection: local}
        """)
    assert len(inv.warnings) == 3, inv.warnings
    assert inv.warnings[0].endswith(":7: ansible_become_user is not supported: roles run as "
                                    "root via sudo")
    assert ":7: ansible_connection='winrm' is not supported" in inv.warnings[1]
    assert ":8: ansible_ssh_pass is ignored" in inv.warnings[2]
    assert inv.hosts["c"].connection == "local"
    assert inv.hosts["a"].connection == "ssh"


def test_with_extra_vars_overrides_connection(tmp_path):
    inv = load(tmp_path, "all:\n  hosts:\n    a: {ansible_user: ubuntu, ansible_port: 22}\n")
    host = inv.hosts["a"].with_extra_vars({"ssh_user": "root", "ssh_port": "2222"})
    assert (host.ssh_user, host.ssh_port, host.vars["ssh_user"]) == ("root", 2222, "root")
    assert inv.hosts["a"].ssh_user == "ubuntu"  # the original is untouched


def test_local_inventory():
    inv = Inventory.local()
    host = inv.hosts["localhost"]
    assert host.connection == "local" and host.groups == ["all", "ungrouped"]
    assert [h.name for h in inv.select("all")] == ["localhost"]
    assert inv.to_list_json()["ungrouped"] == {"hosts": ["localhost"]}


# --- errors with file:line ------------------------------------------------

def test_unknown_group_key_with_did_you_mean(tmp_path):
    msg = load_error(tmp_path, "all:\n  children:\n    lab:\n      host:\n        ws-01:\n")
    assert msg.startswith("INV:4: unknown key 'host' in group 'lab' (expected hosts, "
                          "children or vars)")
    assert "did you mean 'hosts'" in msg


def test_variables_directly_in_a_group_get_a_hint(tmp_path):
    msg = load_error(tmp_path, "all:\n  children:\n    lab:\n      lab_name: x\n")
    assert msg.startswith("INV:4: unknown key 'lab_name'") and "under vars:" in msg


def test_direct_cycle(tmp_path):
    msg = load_error(tmp_path, "all:\n  children:\n    lab:\n      children:\n        lab:\n")
    assert msg.startswith("INV:5: group cycle: lab -> lab")


def test_indirect_cycle_names_every_group(tmp_path):
    msg = load_error(tmp_path, """\
        all:
          children:
            a:
              children:
                b:
                  children:
                    c:
            c:
              children:
                a:
        """)
    assert msg.startswith("INV:10: group cycle: a -> b -> c -> a")


def test_all_as_a_child(tmp_path):
    msg = load_error(tmp_path, "all:\n  children:\n    lab:\n      children:\n        all:\n")
    assert msg.startswith("INV:5: 'all' cannot be a child")


def test_host_named_like_a_group(tmp_path):
    msg = load_error(tmp_path, "all:\n  hosts:\n    x:\n    lab:\n  children:\n    lab:\n")
    assert msg.startswith("INV:4: host 'lab' has the same name as a group")


@pytest.mark.parametrize("text,line,expected", [
    ("- all\n", 1, "an inventory must be a mapping"),
    ("all:\n  hosts:\n    - ws-01\n", 2, "hosts of group 'all' must be a mapping"),
    ("all:\n  children:\n    - lab\n", 2, "children of group 'all' must be a mapping"),
    ("all:\n  children:\n    lab: [a]\n", 3, "group 'lab' must be a mapping"),
    ("all:\n  vars: 5\n", 2, "vars of group 'all' must be a mapping"),
    ("all:\n  vars:\n    - a\n", 2, "vars of group 'all' must be a mapping"),
    ("all:\n  hosts:\n    ws-01: 10.0.0.1\n", 3, "host 'ws-01' must be followed by a mapping"),
    ("hosts:\n  ws-01:\n", 1, "'hosts:' at the top level must be inside a group"),
    ("all:\n  vars:\n    data-dir: /srv\n", 3, "'data-dir' is not a valid variable name"),
    ("all:\n  hosts:\n    a:\n    a:\n", 4, "duplicate key 'a'"),
])
def test_shape_errors(tmp_path, text, line, expected):
    msg = load_error(tmp_path, text)
    assert msg.startswith(f"INV:{line}: {expected}"), msg


# --- output ---------------------------------------------------------------

def test_to_list_json_shape_and_masking(tmp_path):
    inv = load(tmp_path, """\
        all:
          vars: {jupyter_password_hash: abc, api: !secret xyz, port: 1}
          hosts:
            bastion:
          children:
            lab:
              hosts:
                ws-01:
              children:
                empty:
        """)
    out = inv.to_list_json()
    json.dumps(out)
    assert out["all"] == {"children": ["ungrouped", "lab"]}
    assert out["lab"] == {"children": ["empty"], "hosts": ["ws-01"]}
    assert out["ungrouped"] == {"hosts": ["bastion"]}
    assert "empty" not in out  # as ansible-inventory: empty groups are left out
    hv = out["_meta"]["hostvars"]["ws-01"]
    assert hv == {"jupyter_password_hash": "********", "api": "********", "port": 1}
    assert inv.to_list_json(mask_secrets=False)["_meta"]["hostvars"]["ws-01"]["api"] == "xyz"


def test_graph_like_ansible_inventory(tmp_path):
    inv = load(tmp_path, """\
        all:
          hosts:
            bastion:
          children:
            lab:
              hosts: {ws-02: , ws-01: }
              children:
                gpu:
                  hosts: {ws-01: }
            cloud:
              hosts: {vm-1: }
        """)
    assert inv.graph() == textwrap.dedent("""\
        @all:
          |--@cloud:
          |  |--vm-1
          |--@lab:
          |  |--@gpu:
          |  |  |--ws-01
          |  |--ws-01
          |  |--ws-02
          |--@ungrouped:
          |  |--bastion""")
    assert inv.graph("gpu") == "@gpu:\n  |--ws-01"
    with pytest.raises(InventoryError, match="did you mean 'lab'"):
        inv.graph("lab2")


def test_host_colon_port_key(tmp_path):
    inv = load(tmp_path, "all:\n  hosts:\n    ws-01.lab:2222:\n    ws-02:2200:\n"
                         "      ansible_port: 22\n    fe80::1:\n")
    assert inv.hosts["ws-01.lab"].ssh_port == 2222
    assert inv.hosts["ws-02"].ssh_port == 22  # an explicit port var wins
    assert inv.hosts["fe80::1"].ssh_port is None


def test_non_string_connection_value_warns(tmp_path):
    inv = load(tmp_path, "all:\n  hosts:\n    a:\n      ansible_connection: [ssh]\n")
    assert "is not supported" in inv.warnings[0]
