"""vars: precedence, -e parsing, lazy templating, undefined and recursive names, secrets."""

from __future__ import annotations

import textwrap

import pytest

from gpuprov.command import Secret
from gpuprov.errors import InventoryError, PlaybookError, UndefinedVariable
from gpuprov.model.inventory import Host, Inventory
from gpuprov.model.playbook import load_playbook, load_role_defaults
from gpuprov.model.vars import (
    HostVars,
    build_host_vars,
    is_secret_name,
    is_valid_var_name,
    merge_layers,
    parse_extra_vars,
)
from gpuprov.model.yamlfile import Location, load_yaml_string


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --- precedence -----------------------------------------------------------

def test_full_precedence_chain(tmp_path):
    inv = Inventory.load(write(tmp_path, "inv.yml", """\
        all:
          vars: {a: all, b: all, c: all, d: all, e: all, f: all}
          children:
            lab:
              vars: {b: group, c: group, d: group, e: group, f: group}
              hosts:
                ws-01: {c: host, d: host, e: host, f: host}
        """))
    defaults = {"a": "default", "z": "default"}
    hv = build_host_vars(inv.hosts["ws-01"], role_defaults=defaults,
                         play_vars={"d": "play", "e": "play", "f": "play"},
                         role_vars={"e": "role", "f": "role"}, extra_vars={"f": "extra"},
                         role="demo")
    assert {k: hv[k] for k in "abcdefz"} == {
        "a": "all", "b": "group", "c": "host", "d": "play", "e": "role", "f": "extra",
        "z": "default"}
    assert hv.origin("c").line == 7
    assert hv.role == "demo" and hv.host == "ws-01"


def test_origins_point_at_the_winning_layer():
    defaults = load_yaml_string("x: 1\ny: 2\n", "roles/r/defaults.yml")
    play = load_yaml_string("y: 3\n", "site.yml")
    hv = build_host_vars(Host("h"), role_defaults=defaults, play_vars=play)
    assert str(hv.origin("x")) == "roles/r/defaults.yml:1"
    assert str(hv.origin("y")) == "site.yml:1"
    assert hv.origin("nope").file is None


def test_magic_vars():
    host = Host("ws-01.lab", groups=["all", "lab", "gpu"])
    hv = build_host_vars(host)
    assert hv["inventory_hostname"] == "ws-01.lab"
    assert hv["inventory_hostname_short"] == "ws-01"
    assert hv["group_names"] == ["gpu", "lab"]


def test_merge_is_shallow_like_ansible_replace():
    assert merge_layers({"d": {"a": 1}}, None, {"d": {"b": 2}}) == {"d": {"b": 2}}


# --- extra vars -----------------------------------------------------------

def test_extra_vars_key_value_are_strings():
    assert parse_extra_vars(["k=v", "x=1", "b=true", "m=0644", "e="]) == {
        "k": "v", "x": "1", "b": "true", "m": "0644", "e": ""}


def test_extra_vars_several_in_one_argument_and_quoting():
    assert parse_extra_vars(["a=1 b='two words' c=x=y"]) == {"a": "1", "b": "two words",
                                                            "c": "x=y"}


def test_extra_vars_later_wins_and_inline_yaml():
    assert parse_extra_vars(["a=1", '{"a": 2, "l": [1]}', "a=3"]) == {"a": "3", "l": [1]}


def test_extra_vars_from_file(tmp_path):
    path = write(tmp_path, "extra.yml", "gpu_devices: '0,1'\nnvidia_driver_branch: 580\n")
    assert parse_extra_vars([f"@{path}"]) == {"gpu_devices": "0,1", "nvidia_driver_branch": 580}
    assert parse_extra_vars(["@extra.yml"], base_dir=tmp_path)["nvidia_driver_branch"] == 580


def test_extra_vars_file_errors_name_the_file(tmp_path):
    with pytest.raises(InventoryError, match=r"nope.yml: file not found"):
        parse_extra_vars([f"@{tmp_path / 'nope.yml'}"])
    bad = write(tmp_path, "bad.yml", "a: 1\n  b: 2\n")
    with pytest.raises(InventoryError, match=rf"^{bad}:2: invalid YAML"):
        parse_extra_vars([f"@{bad}"])
    lst = write(tmp_path, "list.yml", "- a\n- b\n")
    with pytest.raises(InventoryError, match=rf"^{lst}:1: extra vars must be a mapping"):
        parse_extra_vars([f"@{lst}"])
    badkey = write(tmp_path, "key.yml", "ok: 1\nnot-ok: 2\n")
    with pytest.raises(InventoryError, match=rf"^{badkey}:2: 'not-ok' is not a valid variable"):
        parse_extra_vars([f"@{badkey}"])


def test_every_reader_refuses_a_bad_name_with_one_message(tmp_path):
    """Inventory, play vars, role defaults and -e: the same words and hint."""
    expected = ("'data-dir' is not a valid variable name\n"
                "  hint: use letters, digits and _ (not starting with a digit)")
    inv = write(tmp_path, "inv.yml", "all:\n  vars:\n    data-dir: /srv\n")
    book = write(tmp_path, "site.yml", "- hosts: all\n  vars:\n    data-dir: /srv\n")
    (tmp_path / "r").mkdir()
    defaults = write(tmp_path, "r/defaults.yml", "data-dir: /srv\n")
    cases = [(InventoryError, lambda: Inventory.load(inv), f"{inv}:3: "),
             (PlaybookError, lambda: load_playbook(book), f"{book}:3: "),
             (PlaybookError, lambda: load_role_defaults(tmp_path / "r"), f"{defaults}:1: "),
             (InventoryError, lambda: parse_extra_vars(["data-dir=/srv"]),
              "-e 'data-dir=/srv': ")]
    for error, load, where in cases:
        with pytest.raises(error) as e:
            load()
        assert str(e.value) == where + expected


@pytest.mark.parametrize("arg", ["novalue", "=v", "bad-name=1", "1x=2", "  ", "a='unclosed"])
def test_extra_vars_bad_arguments(arg):
    with pytest.raises(InventoryError, match="-e"):
        parse_extra_vars([arg])


# --- HostVars -------------------------------------------------------------

def test_missing_variable_raises_undefined_variable():
    hv = HostVars({"a": 1}, host="ws-01", role="nvidia_driver")
    with pytest.raises(UndefinedVariable) as e:
        hv["nvidia_driver_branch"]
    assert e.value.name == "nvidia_driver_branch" and e.value.host == "ws-01"
    assert "(role nvidia_driver)" in str(e.value)
    assert "x" not in hv and hv.get("x", 5) == 5 and hv.get("a") == 1
    assert dict(hv) == {"a": 1} and len(hv) == 1


def test_lazy_template_rendering_across_layers():
    host = Host("ws-01", vars={"data_dir": "/srv/{{ lab_name }}"})
    hv = build_host_vars(host, extra_vars={"lab_name": "vision"})
    assert hv["data_dir"] == "/srv/vision"
    assert hv.raw("data_dir") == "/srv/{{ lab_name }}"


def test_templates_keep_native_types_for_a_single_expression():
    hv = HostVars({"base": 8000, "port": "{{ base + 888 }}", "s": "{{ base }}x",
                   "mode": "{{ m }}", "m": "0644", "flag": "{{ f }}", "f": "yes",
                   "lst": ["{{ base }}", {"k": "{{ m }}"}], "devs": "{{ [0, 1] | join(',') }}"})
    assert hv["port"] == 8888
    assert hv["s"] == "8000x"
    assert hv["mode"] == "0644" and hv["flag"] == "yes"  # never re-typed
    assert hv["lst"] == [8000, {"k": "0644"}]
    assert hv["devs"] == "0,1"


def test_jinja_features_default_filter_and_conditions():
    hv = HostVars({"a": "{{ missing | default('x') }}", "b": "{% if c %}on{% endif %}",
                   "c": True, "d": "{{ range(2) | list }}"})
    assert hv["a"] == "x" and hv["b"] == "on" and hv["d"] == [0, 1]


def test_undefined_inside_template_names_variable_and_user():
    hv = HostVars({"data_dir": "/srv/{{ lab_name }}", "whole": "{{ lab_name }}"},
                  host="ws-01", role="jupyter")
    for key in ("data_dir", "whole"):
        with pytest.raises(UndefinedVariable) as e:
            hv[key]
        assert e.value.name == "lab_name"
        assert f"(needed by {key})" in str(e.value)


def test_recursive_reference_is_a_clear_error():
    data = load_yaml_string("a: '{{ b }}'\nb: 'x{{ c }}'\nc: '{{ a }}'\n", "vars.yml")
    hv = HostVars(data, host="h", origins={"a": Location("vars.yml", 1)})
    with pytest.raises(InventoryError) as e:
        hv["a"]
    assert "recursive variable reference: a -> b -> c -> a" in str(e.value)
    assert str(e.value).startswith("vars.yml:1: h:")


def test_self_reference():
    with pytest.raises(InventoryError, match="recursive variable reference: x -> x"):
        HostVars({"x": "{{ x }}"})["x"]


def test_template_syntax_error_names_origin(tmp_path):
    inv = Inventory.load(write(tmp_path, "inv.yml", "all:\n  hosts:\n    h:\n"
                                                    "      data_dir: '/srv/{{ oops'\n"))
    hv = build_host_vars(inv.hosts["h"])
    with pytest.raises(InventoryError) as e:
        hv["data_dir"]
    assert str(e.value).startswith(f"{tmp_path / 'inv.yml'}:4: h: bad template in data_dir")


def test_render_helper():
    hv = HostVars({"x": "{{ y }}", "y": 2})
    assert hv.render("v={{ x }}") == "v=2"
    assert hv.render({"k": ["{{ y }}"]}) == {"k": [2]}


def test_values_are_cached_and_templates_rendered_once():
    hv = HostVars({"x": "{{ [] }}"})
    assert hv["x"] is hv["x"]


# --- secrets --------------------------------------------------------------

@pytest.mark.parametrize("name,secret", [
    ("jupyter_password", True), ("jupyter_password_hash", True), ("registry_token", True),
    ("api_secret", True), ("JUPYTER_TOKEN", True), ("jupyter_token_file", False),
    ("jupyter_port", False), ("password", False), ("tokens", False)])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_secret_tag_and_secret_values():
    data = load_yaml_string("registry_auth: !secret abc\nplain: x\n"
                            "jupyter_token: '{{ registry_auth }}-t'\n"
                            "jupyter_password: '{{ undefined_thing }}'\n", "v.yml")
    hv = HostVars(data)
    assert hv.is_secret("registry_auth") and hv.is_secret("jupyter_token")
    assert not hv.is_secret("plain")
    assert isinstance(hv["registry_auth"], Secret)
    assert sorted(hv.secret_values()) == ["abc", "abc-t"]


def test_secret_is_taken_literally_never_rendered():
    # deliberately changed (issue 14): a !secret value used to be rendered as a
    # template ("{{ base }}-x" became "b-x"); a `{{` in a password is part of it
    hv = HostVars({"api": Secret("{{ base }}-x"), "base": "b"})
    assert isinstance(hv["api"], Secret) and hv["api"] == "{{ base }}-x"


def test_valid_var_names():
    assert is_valid_var_name("gpu_image") and is_valid_var_name("_x1")
    assert not is_valid_var_name("1x") and not is_valid_var_name("a-b")
    assert not is_valid_var_name(3)


def test_render_text_for_file_content():
    hv = HostVars({"port": 8888, "users": ["a", "b"]})
    assert hv.render_text("{{ port }}") == "8888"
    assert hv.render_text("AllowUsers {{ users | join(' ') }}\n") == "AllowUsers a b\n"
    assert hv.render_text("{% for u in users %}{{ u }}{% endfor %}") == "ab"


def test_macros_and_namespaces_work_with_lazy_context():
    hv = HostVars({"a": "{{ b }}", "b": 1})
    text = "{% macro m(x) %}[{{ x }}{{ a }}]{% endmacro %}{{ m(2) }}"
    assert hv.render_text(text) == "[21]"
