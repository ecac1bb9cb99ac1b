"""json_merge: canned daemon.json states -> exact Changes; a local round trip."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import subprocess

import pytest

from gpuprov.facts.base import FactView, gather_script, parse_batch
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.base import Change, Diff
from gpuprov.ops.file_plan import FileOpError, NoteDiff
from gpuprov.ops.jsonfile import deep_merge, dump_json, json_merge, same_json
from tests.unit.shell_helpers import without_upload_check

DAEMON = "/etc/docker/daemon.json"
NVIDIA = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}}
VALIDATE = "dockerd --validate --config-file {}"


def info(content: bytes, mode: str = "0644") -> FileInfo:
    return FileInfo(type="file", owner="root", group="root", mode=mode, size=len(content),
                    uid=0, gid=0, sha256=hashlib.sha256(content).hexdigest(), content=content)


def plan(op, value: FileInfo | None) -> list[Change]:
    return op.plan(FactView({op.fact: value}))


def test_create_when_absent() -> None:
    op = json_merge(DAEMON, NVIDIA, validate=VALIDATE, notify="restart docker")
    [change] = plan(op, None)
    text = dump_json(NVIDIA)
    assert text == ('{\n    "runtimes": {\n        "nvidia": {\n            "path": '
                    '"nvidia-container-runtime",\n            "runtimeArgs": []\n'
                    '        }\n    }\n}\n')
    assert change.steps[0].stdin == text.encode()
    assert (change.resource, change.action) == ("file /etc/docker/daemon.json", "create")
    assert without_upload_check(change.steps[0].command.shell()) == (
        "t= && trap 'rm -f \"$t\"' EXIT && trap 'exit 143' HUP INT TERM PIPE && "
        "t=$(mktemp -u /etc/docker/.gpuprov-XXXXXX) "
        "&& (umask 077 && set -C && : >\"$t\") && cat >\"$t\" && chown -h root:root \"$t\" && "
        "chmod 0644 \"$t\" && { dockerd --validate --config-file \"$t\" || "
        "{ echo 'gpuprov: validation failed, /etc/docker/daemon.json left unchanged' >&2; "
        "exit 1; }; } >&2 && mv -fT \"$t\" /etc/docker/daemon.json && trap - EXIT")
    assert change.notify == ("restart docker",)
    assert change.invalidates == (FileState.at("/etc/docker/daemon.json"),)
    assert op.facts() == [FileState(DAEMON)]


def test_merge_keeps_other_keys_and_order() -> None:
    current = b'{"log-driver": "json-file", "runtimes": {"runc": {"path": "runc"}},' \
              b' "debug": false}'
    [change] = plan(json_merge(DAEMON, NVIDIA), info(current))
    merged = json.loads(change.steps[0].stdin)
    assert list(merged) == ["log-driver", "runtimes", "debug"]
    assert merged["runtimes"] == {"runc": {"path": "runc"}, **NVIDIA["runtimes"]}
    assert change.diff == Diff(DAEMON, current.decode(), change.steps[0].stdin.decode())


def test_reformatting_alone_is_no_change() -> None:
    compact = json.dumps({"debug": False, **NVIDIA}, separators=(",", ":")).encode()
    assert plan(json_merge(DAEMON, NVIDIA), info(compact)) == []
    assert plan(json_merge(DAEMON, {"debug": False}), info(compact)) == []


def test_mode_only_keeps_bytes() -> None:
    compact = json.dumps(NVIDIA).encode()
    [change] = plan(json_merge(DAEMON, NVIDIA, mode="0600"), info(compact))
    assert without_upload_check(change.steps[0].command.shell()) == \
        "chmod 0600 -- /etc/docker/daemon.json"
    assert change.diff == NoteDiff(f"{DAEMON} (mode 0644 -> 0600)", note="content unchanged")


def test_types_are_compared_strictly() -> None:
    [change] = plan(json_merge(DAEMON, {"debug": True}), info(b'{"debug": 1}'))
    assert json.loads(change.steps[0].stdin) == {"debug": True}
    assert plan(json_merge(DAEMON, {"n": 1}), info(b'{"n": 1.0}')) == []
    assert not same_json({"a": [True]}, {"a": [1]})
    assert not same_json({"a": "1"}, {"a": 1})


def test_lists_replaced_dicts_merged() -> None:
    base = {"a": {"x": 1, "l": [1, 2]}, "b": 1}
    assert deep_merge(base, {"a": {"l": [3], "y": 2}}) == {"a": {"x": 1, "l": [3], "y": 2},
                                                            "b": 1}
    assert deep_merge(base, {"a": 5}) == {"a": 5, "b": 1}
    assert base == {"a": {"x": 1, "l": [1, 2]}, "b": 1}  # not mutated


def test_remove_keys() -> None:
    current = json.dumps({"runtimes": {"nvidia": {"path": "x"}, "runc": {}},
                          "default-runtime": "nvidia"}).encode()
    op = json_merge(DAEMON, {}, remove=[("runtimes", "nvidia"), "default-runtime"])
    [change] = plan(op, info(current))
    assert json.loads(change.steps[0].stdin) == {"runtimes": {"runc": {}}}
    # already gone: nothing to do, and a missing parent is fine too
    assert plan(op, info(b'{"runtimes": {"runc": {}}}')) == []
    assert plan(op, info(b'{"x": 1}')) == []


def test_set_and_remove_same_key_refused() -> None:
    with pytest.raises(ValueError, match="runtimes.nvidia"):
        json_merge(DAEMON, NVIDIA, remove=[("runtimes", "nvidia")])
    with pytest.raises(ValueError, match="runtimes"):
        json_merge(DAEMON, NVIDIA, remove=["runtimes"])


def test_invalid_json_is_not_overwritten() -> None:
    with pytest.raises(FileOpError, match=r"/etc/docker/daemon.json on the host is not valid "
                                          r"JSON .*not overwriting it"):
        plan(json_merge(DAEMON, NVIDIA), info(b'{"debug": true,'))
    with pytest.raises(FileOpError, match="holds a JSON list"):
        plan(json_merge(DAEMON, NVIDIA), info(b"[1]"))


def test_empty_file_counts_as_absent() -> None:
    [change] = plan(json_merge(DAEMON, {"debug": True}), info(b"\n"))
    assert change.action == "update"
    assert change.steps[0].stdin == b'{\n    "debug": true\n}\n'


def test_patch_must_be_json_data() -> None:
    with pytest.raises(TypeError, match="not JSON"):
        json_merge(DAEMON, {"x": object()})


def test_int_mode_refused() -> None:
    with pytest.raises(TypeError, match="quote"):
        json_merge(DAEMON, {}, mode=420)  # type: ignore[arg-type]


def test_secret_masks_diff() -> None:
    [change] = plan(json_merge("/etc/app/creds.json", {"token": "t0ps3cret"}, mode="0600",
                               secret=True), None)
    assert "t0ps3cret" not in str(change.to_json())
    assert change.diff is not None and change.diff.secret


def test_local_round_trip(tmp_path) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    my_group = grp.getgrgid(os.getgid()).gr_name
    target = tmp_path / "daemon.json"
    target.write_text('{"data-root": "/data/docker", "runtimes": {"nvidia": {"path": "old"}}}')
    op = json_merge(str(target), NVIDIA, owner=me, group=my_group, read_as_root=False,
                    validate="python3 -m json.tool {}")

    def gather_plan() -> list[Change]:
        facts = list(op.facts())
        script, marker = gather_script(facts)
        out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, check=True)
        return op.plan(FactView(parse_batch(facts, out.stdout.decode(), marker)))

    [change] = gather_plan()
    step = change.steps[0]
    result = subprocess.run(["/bin/sh", "-c", step.command.shell()], input=step.stdin,
                            capture_output=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(target.read_text()) == {"data-root": "/data/docker", **NVIDIA}
    assert gather_plan() == []
