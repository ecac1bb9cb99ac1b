"""ops/generated: a secret made on the host, declared once with @operation:
its parameters, their checks, and what it plans (the jupyter role's tests
cover the token end to end, the generation command included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.facts.base import FactView
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.generated import GeneratedSecret, generated_secret

PATH = "/etc/lab/api.key"


def test_parameters_are_the_dataclass_fields_keyword_only_after_the_path() -> None:
    op = generated_secret("/etc/lab/../lab/api.key", nbytes=24, owner="svc", group="svc",
                          mode="640", notify="restart api")
    assert isinstance(op, GeneratedSecret)
    assert (op.path, op.nbytes, op.owner, op.group, op.mode, op.notify) == (
        PATH, 24, "svc", "svc", "0640", ("restart api",))
    assert op.label == f"token {PATH}"
    # stat only: the content never leaves the host
    assert op.facts() == [FileState(PATH, content=False, sudo=True)]
    with pytest.raises(TypeError):
        generated_secret(PATH, 32)  # type: ignore[misc]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"nbytes": 8}, ValueError, "at least 16 random bytes, got 8"),
    ({"mode": 600}, TypeError, "quote it"),
    ({"path": "api.key"}, ValueError, "path must be absolute"),
    ({"notify": [""]}, TypeError, "notify takes handler names"),
])
def test_bad_parameters_are_refused_when_declared(kwargs: dict, error: type, message: str
                                                  ) -> None:
    with pytest.raises(error, match=message):
        generated_secret(**{"path": PATH, **kwargs})


def test_a_new_secret_is_sized_by_nbytes_and_never_shown() -> None:
    op = generated_secret(PATH, nbytes=16, notify="restart api")
    [change] = op.plan(FactView({op.fact: None}))
    assert (change.action, change.notify) == ("create", ("restart api",))
    assert "-N16 /dev/urandom" in change.steps[0].command.shell()
    assert "[0-9a-f]{32}" in change.steps[0].command.shell()
    assert change.steps[0].stdin is None
    assert change.diff is not None and change.diff.unified().endswith("; never shown\n")
    full = FileInfo("file", "root", "root", "0600", 33, 0, 0)
    assert op.plan(FactView({op.fact: full})) == []


def test_without_newline_the_file_is_the_hex_alone_and_any_other_size_is_replaced() -> None:
    # for readers that take the whole file as the secret (JUPYTER_TOKEN_FILE)
    op = generated_secret(PATH, nbytes=32, newline=False)
    [change] = op.plan(FactView({op.fact: None}))
    shell = change.steps[0].command.shell()
    assert 'echo >>"$t"' not in shell and "grep -qxE '[0-9a-f]{64}'" in shell
    exact = FileInfo("file", "root", "root", "0600", 64, 0, 0)
    assert op.plan(FactView({op.fact: exact})) == []
    for size in (65, 80):
        [change] = op.plan(FactView({op.fact: FileInfo("file", "root", "root", "0600", size,
                                                       0, 0)}))
        assert change.summary.startswith(f"replace a {size}-byte token, not exactly 64 hex "
                                         "chars")
    # with the newline (the default) a longer, hand-made file is kept
    assert 'echo >>"$t"' in generated_secret(PATH).plan(
        FactView({op.fact: None}))[0].steps[0].command.shell()
    assert generated_secret(PATH).plan(FactView({op.fact: FileInfo(
        "file", "root", "root", "0600", 80, 0, 0)})) == []


def test_the_command_really_writes_no_newline_when_asked(tmp_path: Path) -> None:
    import os
    import subprocess

    from gpuprov.ops.generated import generate_command
    target = tmp_path / "token"
    cmd = generate_command(str(target), 32, str(os.getuid()), str(os.getgid()), "0640",
                           newline=False)
    subprocess.run(["/bin/sh", "-c", cmd.shell()], check=True)
    text = target.read_text()
    assert len(text) == 64 and int(text, 16) >= 0 and "\n" not in text
    assert oct(target.stat().st_mode & 0o777) == "0o640"
