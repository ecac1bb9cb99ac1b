"""playbook: plays validated with file:line; roles found on the search path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpuprov.errors import PlaybookError
from gpuprov.model import playbook
from gpuprov.model.playbook import (
    Play,
    RoleRef,
    find_playbook,
    find_role,
    load_playbook,
    load_plays,
    load_role_defaults,
    parse_serial,
    resolve_roles,
    role_search_path,
)
from gpuprov.model.yamlfile import Location, location

DATA = Path(__file__).resolve().parent / "data" / "playbooks"


def write(base: Path, rel: str, text: str) -> Path:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def play_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, "site.yml", text)
    with pytest.raises(PlaybookError) as e:
        load_playbook(path)
    return str(e.value).replace(str(path), "PB")


def test_fixture_site_playbook():
    plays = load_playbook(DATA / "site.yml")
    assert [p.name for p in plays] == ["GPU hosts", "Cluster nodes"]
    first = plays[0]
    assert first == Play(
        name="GPU hosts", hosts="lab:cloud",
        roles=[RoleRef("nouveau", file=first.file, line=9),
               RoleRef("nvidia_driver", vars={"nvidia_driver_branch": 580}, tags=["driver"],
                       file=first.file, line=10),
               RoleRef("container_toolkit", tags=["docker", "toolkit"], file=first.file,
                       line=14)],
        vars={"gpu_devices": "all"}, tags=["gpu"], serial="30%", max_fail_percentage=20.0,
        reboot="if-needed", file=first.file, line=2)
    assert plays[1].serial == 2 and plays[1].reboot is None and plays[1].roles == []
    assert location(first.vars, "gpu_devices").line == 17  # play vars keep locations


def test_minimal_play_and_defaults(tmp_path):
    path = write(tmp_path, "site.yml", "- hosts: all\n  roles: [a]\n")
    (play,) = load_playbook(path)
    assert (play.name, play.hosts, play.vars, play.tags, play.serial) == ("all", "all", {}, [],
                                                                          None)
    assert play.max_fail_percentage is None and play.reboot is None
    assert (play.file, play.line) == (str(path), 1)


def test_hosts_as_list_and_tags_as_string(tmp_path):
    path = write(tmp_path, "site.yml", "- hosts: [lab, cloud]\n  tags: a, b\n")
    (play,) = load_playbook(path)
    assert play.hosts == "lab,cloud" and play.tags == ["a", "b"]


@pytest.mark.parametrize("text,line,expected,hint", [
    ("- hosts: all\n  rolse: [a]\n", 2, "unknown play key 'rolse'", "did you mean 'roles'?"),
    ("- hosts: all\n  serail: 2\n", 2, "unknown play key 'serail'", "did you mean 'serial'?"),
    ("- hosts: all\n  tasks: []\n", 2, "unknown play key 'tasks'", "tasks.py"),
    ("- hosts: all\n  gather_facts: no\n", 2, "unknown play key 'gather_facts'",
     "always gathered"),
    ("- hosts: all\n  become: true\n", 2, "unknown play key 'become'", "inventory"),
    ("- name: x\n  roles: [a]\n", 1, "a play needs hosts", None),
    ("- hosts: ''\n", 1, "a play needs hosts", None),
    ("- hosts: all\n  roles: a\n", 2, "roles must be a list", None),
    ("- hosts: all\n  roles:\n    - [a]\n", 3, "a role must be a name", None),
    ("- hosts: all\n  roles:\n    - {vars: {}}\n", 3, "a role entry needs role:", None),
    ("- hosts: all\n  roles:\n    - role: a\n      x: 1\n", 4, "unknown key 'x' in role entry",
     "under vars:"),
    ("- hosts: all\n  roles:\n    - role: a\n      tag: [x]\n", 4,
     "unknown key 'tag' in role entry", "did you mean 'tags'?"),
    ("- hosts: all\n  roles:\n    - ../evil\n", 3, "bad role name '../evil'", None),
    ("- hosts: all\n  vars: [a]\n", 2, "vars must be a mapping", None),
    ("- hosts: all\n  vars:\n    ok: 1\n    data-dir: x\n", 4,
     "'data-dir' is not a valid variable name", None),
    ("- hosts: all\n  tags: {a: 1}\n", 2, "tags must be a list", None),
    ("- hosts: all\n  serial: 0\n", 2, "serial must be a positive number", None),
    ("- hosts: all\n  serial: '150%'\n", 2, "serial must be a positive number", None),
    ("- hosts: all\n  serial: lots\n", 2, "serial must be a positive number", None),
    ("- hosts: all\n  serial: '25 %'\n", 2, "serial must be a positive number", None),
    ("- hosts: all\n  serial: '12.5%'\n", 2, "serial must be a positive number", None),
    ("- hosts: all\n  serial: true\n", 2, "serial must be a positive number", None),
    ("- hosts: all\n  max_fail_percentage: 101\n", 2, "max_fail_percentage must be", None),
    ("- hosts: all\n  max_fail_percentage: true\n", 2, "max_fail_percentage must be", None),
    ("- hosts: all\n  reboot: yes\n", 2, "reboot must be one of never, if-needed", None),
    ("- hosts: all\n  reboot: if_needed\n", 2, "reboot must be one of", "'if-needed'"),
    ("- hosts: all\n- just a string\n", 2, "a play must be a mapping", None),
    ("hosts: all\n", 1, "a playbook must be a list of plays", None),
    ("- hosts: all\n  hosts: lab\n", 2, "duplicate key 'hosts'", None),
    ("- hosts: all\n  roles: [a\n", 3, "invalid YAML", None),
])
def test_play_errors_name_file_and_line(tmp_path, text, line, expected, hint):
    msg = play_error(tmp_path, text)
    assert msg.startswith(f"PB:{line}: {expected}"), msg
    if hint:
        assert hint in msg


def test_empty_playbook(tmp_path):
    assert play_error(tmp_path, "# nothing\n").startswith("PB: the playbook is empty")


def test_serial_and_max_fail_forms(tmp_path):
    path = write(tmp_path, "site.yml", "- hosts: all\n  serial: ' 25%'\n"
                                       "  max_fail_percentage: '10%'\n"
                                       "- hosts: all\n  serial: '5'\n")
    first, second = load_playbook(path)
    assert first.serial == "25%" and first.max_fail_percentage == 10.0
    assert second.serial == 5  # a count as text, as --serial gives it


@pytest.mark.parametrize("value,expected", [
    ("5", 5), (5, 5), (" 30% ", "30%"), ("100%", "100%"), ("007", 7)])
def test_parse_serial_is_the_rule_of_plays_and_the_cli(value, expected):
    assert parse_serial(value) == expected


@pytest.mark.parametrize("value", ["0", 0, -1, "0%", "101%", "12.5%", "25 %", "ten", "", True,
                                   2.5, "٣"])
def test_parse_serial_refuses(value):
    with pytest.raises(ValueError, match=r"^must be a positive number of hosts or a percentage"):
        parse_serial(value)


# --- roles ----------------------------------------------------------------

def make_roles(base: Path, *names: str) -> Path:
    for name in names:
        (base / "roles" / name).mkdir(parents=True, exist_ok=True)
    return base / "roles"


def test_role_search_order(tmp_path):
    cwd, pbdir, bundled = tmp_path / "cwd", tmp_path / "pb", tmp_path / "pkg"
    make_roles(cwd, "docker")
    make_roles(pbdir, "docker", "jupyter")
    make_roles(bundled, "docker", "jupyter", "nvidia_driver")
    path = role_search_path(pbdir / "site.yml", bundled / "roles", cwd=cwd)
    assert path == [cwd / "roles", (pbdir / "roles").resolve(), bundled / "roles"]
    assert find_role("docker", path) == cwd / "roles" / "docker"
    assert find_role("jupyter", path) == (pbdir / "roles" / "jupyter").resolve()
    assert find_role("nvidia_driver", path) == bundled / "roles" / "nvidia_driver"


def test_search_path_has_no_duplicates(tmp_path):
    (tmp_path / "site.yml").write_text("")
    path = role_search_path(tmp_path / "site.yml", None, cwd=tmp_path)
    assert path == [tmp_path / "roles"]


def test_missing_role_names_playbook_line_and_dirs(tmp_path):
    roles = make_roles(tmp_path, "nvidia_driver", "docker")
    pb = write(tmp_path, "site.yml", "- hosts: all\n  roles:\n    - docker\n"
                                     "    - role: nvidia_drvier\n")
    plays = load_playbook(pb)
    with pytest.raises(PlaybookError) as e:
        resolve_roles(plays, [tmp_path / "nowhere", roles])
    msg = str(e.value)
    assert msg.startswith(f"{pb}:4: role 'nvidia_drvier' not found; searched: "
                          f"{tmp_path / 'nowhere'}, {roles}")
    assert "did you mean 'nvidia_driver'?" in msg
    assert plays[0].roles[0].path == roles / "docker"


def test_load_plays_finds_the_site_playbook_and_resolves_its_roles(tmp_path, monkeypatch):
    project = tmp_path / "project"
    roles = make_roles(project, "docker")
    book = write(project, "playbooks/site.yml", "- hosts: all\n  roles: [docker]\n")
    monkeypatch.chdir(project)
    assert find_playbook(None) == book
    (play,) = load_plays(None)
    assert play.roles[0].path == roles / "docker"
    other = write(tmp_path, "other.yml", "- hosts: all\n  roles: [docker]\n")
    assert find_playbook(str(other)) == other
    assert load_plays(other)[0].file == str(other)


def test_load_plays_without_any_playbook(tmp_path, monkeypatch):
    monkeypatch.setattr(playbook, "default_playbook", lambda: None)
    with pytest.raises(PlaybookError, match="^no playbook given and no playbooks/site.yml "
                                            "found\n  hint: pass -p/--playbook"):
        load_plays(None)


def test_missing_role_lists_available_ones(tmp_path):
    roles = make_roles(tmp_path, "docker")
    with pytest.raises(PlaybookError, match="available roles: docker"):
        find_role("zzzz", [roles], Location("site.yml", 3))


def test_load_role_defaults(tmp_path):
    role = tmp_path / "roles" / "nvidia_driver"
    role.mkdir(parents=True)
    assert load_role_defaults(role) == {}
    write(role, "defaults.yml", """\
        # Driver branch: 580 is the long-term branch.
        nvidia_driver_branch: 580
        # File mode stays a string.
        mode: 0644
        """)
    defaults = load_role_defaults(role)
    assert defaults == {"nvidia_driver_branch": 580, "mode": "0644"}
    assert location(defaults, "mode") == Location(str(role / "defaults.yml"), 4)


@pytest.mark.parametrize("text,line,expected", [
    ("a: 1\na: 2\n", 2, "duplicate key 'a'"),
    ("- a\n", 1, "defaults must be a mapping"),
    ("a: [1\n", 2, "invalid YAML"),
    ("ok: 1\nbad-name: 2\n", 2, "'bad-name' is not a valid variable name"),
])
def test_role_defaults_errors(tmp_path, text, line, expected):
    path = write(tmp_path, "r/defaults.yml", text)
    with pytest.raises(PlaybookError) as e:
        load_role_defaults(tmp_path / "r")
    assert str(e.value).startswith(f"{path}:{line}: {expected}"), str(e.value)
