"""ops/generated: a secret made on the host, declared once with @operation:
its parameters, their checks, and what it plans (the jupyter role's tests
cover the token end to end, the generation command included)."""

from __future__ import annotations

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
