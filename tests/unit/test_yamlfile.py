"""yamlfile: plain data with locations, no YAML 1.1 surprises, duplicates refused."""

from __future__ import annotations

import copy
import json
import textwrap

import pytest

from gpuprov.command import Secret
from gpuprov.errors import InventoryError, PlaybookError
from gpuprov.model.yamlfile import (
    Location,
    YamlList,
    YamlMap,
    close_names,
    did_you_mean,
    load_yaml,
    load_yaml_string,
    location,
)


def write(tmp_path, text, name="f.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("text", ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On"])
def test_yes_no_on_off_stay_strings(text):
    assert load_yaml_string(f"v: {text}")["v"] == text


@pytest.mark.parametrize("text,value", [("true", True), ("false", False), ("True", True),
                                        ("FALSE", False)])
def test_only_true_false_are_booleans(text, value):
    assert load_yaml_string(f"v: {text}")["v"] is value


@pytest.mark.parametrize("text", ["0644", "0755", "00", "0o644", "0x1F", "-0644"])
def test_leading_zero_and_prefixed_numbers_stay_strings(text):
    assert load_yaml_string(f"mode: {text}")["mode"] == text


@pytest.mark.parametrize("text,value", [("0", 0), ("580", 580), ("-3", -3), ("+7", 7),
                                        ("1_000", 1000), ("1.5", 1.5), ("0.5", 0.5),
                                        ("1e3", 1000.0), ("-2.5e-1", -0.25)])
def test_decimal_numbers(text, value):
    got = load_yaml_string(f"v: {text}")["v"]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["535.154.05", "2024-01-02", "1:30", "1.10.0", "12:30:00"])
def test_versions_dates_and_sexagesimal_stay_strings(text):
    assert load_yaml_string(f"v: {text}")["v"] == text


def test_null_forms_and_quoted_values():
    data = load_yaml_string('a:\nb: ~\nc: null\nd: "true"\ne: \'0644\'\nf: "12"')
    assert data == {"a": None, "b": None, "c": None, "d": "true", "e": "0644", "f": "12"}


def test_explicit_tags():
    data = load_yaml_string("a: !!str 12\nb: !!int 12\nc: !!float 2\nd: !!bool true\n"
                            "e: !!str true\nf: !!null ''")
    assert data == {"a": "12", "b": 12, "c": 2.0, "d": True, "e": "true", "f": None}
    assert isinstance(data["c"], float)


def test_explicit_int_with_leading_zero_is_refused_with_line():
    with pytest.raises(InventoryError, match=r"^x.yml:2: '0644' is not a decimal number"):
        load_yaml_string("a: 1\nmode: !!int 0644\n", "x.yml")


def test_unknown_tag_is_an_error_with_line():
    with pytest.raises(InventoryError, match=r"^x.yml:3: unsupported YAML tag '!vault'"):
        load_yaml_string("a: 1\nb: 2\nc: !vault abc\n", "x.yml")


def test_secret_tag_gives_a_masked_repr_string():
    data = load_yaml_string("token: !secret s3cr3t\n")
    assert isinstance(data["token"], Secret)
    assert data["token"] == "s3cr3t"
    assert "s3cr3t" not in repr(data)


def test_locations_of_keys_and_items(tmp_path):
    path = write(tmp_path, """\
        # comment
        all:
          hosts:
            a:
            b:
          list:
            - one
            -
              two
        """)
    data = load_yaml(path)
    assert isinstance(data, YamlMap) and isinstance(data["all"]["list"], YamlList)
    assert location(data, "all") == Location(str(path), 2)
    assert location(data["all"]["hosts"], "b") == Location(str(path), 5)
    assert location(data["all"]["list"], 0).line == 7
    assert location(data["all"]["list"], 1).line == 9
    assert location(data["all"]["hosts"]).line == 4
    assert str(location(data, "all")) == f"{path}:2"


def test_location_falls_back_for_unknown_keys_and_plain_data():
    data = load_yaml_string("a:\n  b: 1\n", "f.yml")
    assert location(data["a"], "missing") == Location("f.yml", 2)
    assert location({"a": 1}, "a") == Location(None, None)
    assert location(data["a"]["b"]) == Location(None, None)
    assert str(Location(None, None)) == "<unknown>"


def test_data_is_plain_enough_for_json_and_deepcopy():
    data = load_yaml_string("a: [1, {b: c}]\n", "f.yml")
    assert json.loads(json.dumps(data)) == {"a": [1, {"b": "c"}]}
    clone = copy.deepcopy(data)
    assert clone == data and location(clone, "a").line == 1


def test_duplicate_key_is_an_error_naming_both_lines(tmp_path):
    path = write(tmp_path, """\
        all:
          vars:
            x: 1
            y: 2
            x: 3
        """)
    with pytest.raises(InventoryError) as e:
        load_yaml(path)
    assert str(e.value).startswith(f"{path}:5: duplicate key 'x' (first defined at line 3)")


def test_same_key_in_different_mappings_is_fine():
    assert load_yaml_string("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}


def test_anchors_aliases_and_merge_keys():
    data = load_yaml_string(textwrap.dedent("""\
        base: &base {user: admin, port: 22}
        a: *base
        b:
          <<: *base
          port: 2222
        c:
          <<: [*base, {extra: 1}]
        """), "f.yml")
    assert data["a"] == {"user": "admin", "port": 22}
    assert data["b"] == {"port": 2222, "user": "admin"}
    assert data["c"] == {"user": "admin", "port": 22, "extra": 1}
    assert location(data["b"], "port").line == 5


def test_merge_of_a_scalar_is_an_error():
    with pytest.raises(InventoryError, match=r"^f.yml:3: '<<' merge needs a mapping"):
        load_yaml_string("a: &x 1\nb:\n  <<: *x\n", "f.yml")


def test_recursive_alias_is_refused():
    with pytest.raises(InventoryError, match="recursive YAML alias"):
        load_yaml_string("a: &x\n  b: *x\n", "f.yml")


def test_complex_key_is_refused_with_line():
    with pytest.raises(InventoryError, match=r"^f.yml:2: a mapping key must be a plain value"):
        load_yaml_string("a: 1\n? [x, y]\n: 2\n", "f.yml")


def test_syntax_error_names_file_and_parser_line(tmp_path):
    path = write(tmp_path, "all:\n  hosts:\n    a: [1, 2\n  vars: {}\n")
    with pytest.raises(InventoryError) as e:
        load_yaml(path)
    assert str(e.value).startswith(f"{path}:4: invalid YAML")


def test_bad_indentation_error_line(tmp_path):
    path = write(tmp_path, "all:\n  hosts:\n    a:\n   b: 1\n")
    with pytest.raises(InventoryError, match=rf"^{path}:4: invalid YAML"):
        load_yaml(path)


def test_multiple_documents_are_refused(tmp_path):
    path = write(tmp_path, "a: 1\n---\nb: 2\n")
    with pytest.raises(InventoryError, match=rf"^{path}:\d+: invalid YAML.*single document"):
        load_yaml(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(InventoryError, match=r"nope.yml: file not found"):
        load_yaml(tmp_path / "nope.yml")
    assert load_yaml(write(tmp_path, "# only a comment\n")) is None


def test_error_class_is_chosen_by_caller():
    with pytest.raises(PlaybookError):
        load_yaml_string("a: 1\na: 2\n", "p.yml", PlaybookError)


def test_did_you_mean_helpers():
    assert close_names("ansible_hots", ["ansible_host", "ansible_user"]) == ["ansible_host"]
    assert close_names("ssh_usr", ["ssh_user", "ssh_port"])[0] == "ssh_user"
    assert close_names("addresses", ["address"], fuzzy=False) == []
    assert close_names("childrens", ["hosts", "children", "vars"]) == ["children"]
    assert did_you_mean("var", ["hosts", "children", "vars"]) == "did you mean 'vars'?"
    assert did_you_mean("zzz", ["hosts"]) is None
