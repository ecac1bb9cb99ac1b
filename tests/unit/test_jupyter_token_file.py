"""What the jupyter role relies on in jupyter_server (the version the image
must have, >= 2.21, installed with the tests): the token is read from the
file JUPYTER_TOKEN_FILE names, whole, newline included (so the role writes
the hex digits alone), and only when JUPYTER_TOKEN is unset or empty (so
the role's `-e JUPYTER_TOKEN=` keeps a token set by the image from winning)."""

from __future__ import annotations

from pathlib import Path

import pytest

identity = pytest.importorskip("jupyter_server.auth.identity")


def token_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    for name in ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return str(identity.IdentityProvider().token)


def test_the_token_file_is_read_whole_and_an_empty_jupyter_token_does_not_win(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "ab" * 32
    path = tmp_path / "token"
    path.write_text(token)
    assert token_with(monkeypatch, {"JUPYTER_TOKEN": "", "JUPYTER_TOKEN_FILE": str(path)}) \
        == token
    # a value from the image would win over the file: the role sets it empty
    assert token_with(monkeypatch, {"JUPYTER_TOKEN": "from-image",
                                    "JUPYTER_TOKEN_FILE": str(path)}) == "from-image"
    # not stripped: a newline would be part of the token nobody can type
    path.write_text(token + "\n")
    assert token_with(monkeypatch, {"JUPYTER_TOKEN_FILE": str(path)}) == token + "\n"
