"""patterns: --limit as in Ansible; a term matching nothing is an error."""

from __future__ import annotations

import textwrap

import pytest

from gpuprov.errors import InventoryError
from gpuprov.model.inventory import Inventory
from gpuprov.model.patterns import select, split_pattern


@pytest.fixture
def inv(tmp_path) -> Inventory:
    path = tmp_path / "inventory.yml"
    path.write_text(textwrap.dedent("""\
        all:
          hosts:
            bastion:
          children:
            lab:
              hosts:
                ws-01.lab:
                ws-02.lab:
                ws-03.lab:
              children:
                gpu:
                  hosts:
                    ws-02.lab:
            cloud:
              hosts:
                vm-a:
                vm-b:
            cluster:
              hosts:
                node-1:
                ws-03.lab:
            empty:
        """))
    return Inventory.load(path)


def names(hosts):
    return [h.name for h in hosts]


ALL = ["bastion", "ws-01.lab", "ws-02.lab", "ws-03.lab", "vm-a", "vm-b", "node-1"]


@pytest.mark.parametrize("pattern,expected", [
    ("all", ALL),
    ("*", ALL),
    ("vm-a", ["vm-a"]),
    ("lab", ["ws-01.lab", "ws-02.lab", "ws-03.lab"]),  # includes child group gpu
    ("gpu", ["ws-02.lab"]),
    ("ungrouped", ["bastion"]),
    ("ws-0*", ["ws-01.lab", "ws-02.lab", "ws-03.lab"]),
    ("ws-0[12].lab", ["ws-01.lab", "ws-02.lab"]),
    ("c*", ["ws-03.lab", "vm-a", "vm-b", "node-1"]),  # globs match groups too
    ("~^vm-[ab]$", ["vm-a", "vm-b"]),
    # inventory order, not pattern order
    ("cloud:lab", ["ws-01.lab", "ws-02.lab", "ws-03.lab", "vm-a", "vm-b"]),
    ("vm-b,bastion", ["bastion", "vm-b"]),
    ("lab:&cluster", ["ws-03.lab"]),
    ("lab:!gpu", ["ws-01.lab", "ws-03.lab"]),
    ("lab,!gpu", ["ws-01.lab", "ws-03.lab"]),
    ("!lab", ["bastion", "vm-a", "vm-b", "node-1"]),  # leading ! starts from all
    ("&cluster", ["ws-03.lab", "node-1"]),
    (" lab : !ws-01.lab ", ["ws-02.lab", "ws-03.lab"]),
])
def test_patterns(inv, pattern, expected):
    assert names(select(inv, pattern)) == expected
    assert names(inv.select(pattern)) == expected


def test_order_is_unions_then_intersections_then_exclusions(inv):
    # Written order would give {} after !lab and then add cloud; Ansible's order does not.
    assert names(select(inv, "!lab:cloud:&cloud")) == ["vm-a", "vm-b"]
    assert names(select(inv, "!ws-02.lab:&lab:cluster:gpu")) == ["ws-03.lab"]


def test_term_matching_nothing_is_an_error_with_close_names(inv):
    with pytest.raises(InventoryError) as e:
        select(inv, "lab:clod")
    assert "host pattern 'clod' matches no host or group" in str(e.value)
    assert "did you mean 'cloud'" in str(e.value)


def test_excluded_term_must_exist_too(inv):
    with pytest.raises(InventoryError, match="'ws-09.lab' matches no host"):
        select(inv, "lab:!ws-09.lab")


def test_unknown_term_without_close_names_lists_groups(inv):
    with pytest.raises(InventoryError, match="known groups: all, lab, gpu, cloud"):
        select(inv, "zzzzzz")


def test_glob_matching_nothing_is_an_error(inv):
    with pytest.raises(InventoryError, match="'db-\\*' matches no host"):
        select(inv, "db-*")


def test_empty_group_and_empty_result(inv):
    assert select(inv, "empty", allow_empty=True) == []
    with pytest.raises(InventoryError, match="the matched groups have no hosts"):
        select(inv, "empty")
    with pytest.raises(InventoryError, match="host pattern 'lab:&cloud' selects no hosts"):
        select(inv, "lab:&cloud")
    with pytest.raises(InventoryError, match="empty host pattern"):
        select(inv, " , ")
    with pytest.raises(InventoryError, match="empty term"):
        select(inv, "lab:!")


def test_bad_regex(inv):
    with pytest.raises(InventoryError, match="bad regular expression"):
        select(inv, "~[")


def test_split_pattern_prefers_commas_for_ipv6():
    assert split_pattern("fe80::1,lab") == ["fe80::1", "lab"]
    assert split_pattern("a:&b:!c") == ["a", "&b", "!c"]
