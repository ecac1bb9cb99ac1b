"""`verify: signed`: a commit signed (git's ssh signatures) by a key in the
allowed signers file is run; an unsigned one or one by another key is
refused as "unsigned" and nothing runs. Keys made with ssh-keygen in tmp_path."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from gpuprov.engine.pullgit import PullGit
from gpuprov.model.pullconfig import PullConfig
from tests.unit import pull_helpers
from tests.unit.pull_helpers import Host

host = pull_helpers.host   # the fixture


def keypair(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f",
                    str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def signed(host: Host, key: Path, message: str) -> str:
    return host.origin.commit(message, "-c", "gpg.format=ssh", "-c",
                              f"user.signingkey={key}", "-c", "commit.gpgsign=true")


@pytest.fixture()
def signers(host: Host) -> tuple[Path, Path]:
    good, other = host.tmp / "good", host.tmp / "other"
    allowed = host.tmp / "etc" / "pull-allowed-signers"
    allowed.write_text(f'test@example.com namespaces="git" {keypair(good)}\n')
    keypair(other)
    host.configure(verify="signed", allowed_signers=str(allowed))
    return good, other


def test_a_commit_signed_by_an_allowed_key_applies(host: Host,
                                                    signers: tuple[Path, Path]) -> None:
    sha = signed(host, signers[0], "signed")
    result = host.pull()
    assert result.code == 0, result.both
    assert host.last()["result"] == "applied" and host.last()["commit"] == sha


def test_an_unsigned_commit_is_refused(host: Host, signers: tuple[Path, Path]) -> None:
    good = signed(host, signers[0], "signed")
    assert host.pull().code == 0
    sha = host.origin.commit("unsigned")
    result = host.pull()
    assert result.code == 2, result.both
    last = host.last()
    assert last["result"] == "unsigned" and last["commit"] == sha
    assert "is not signed by a key in" in last["message"]
    assert last["last_good_commit"] == good and host.checkout_head() == good
    assert host.runner.commands == ["apply"]


def test_a_commit_signed_by_another_key_is_refused(host: Host,
                                                    signers: tuple[Path, Path]) -> None:
    signed(host, signers[1], "other key")
    result = host.pull()
    assert result.code == 2, result.both
    assert host.last()["result"] == "unsigned"
    assert host.runner.calls == []


def test_a_missing_allowed_signers_file_is_refused(host: Host) -> None:
    host.configure(verify="signed", allowed_signers=str(host.tmp / "none"))
    result = host.pull()
    assert result.code == 2, result.both
    assert host.last()["result"] == "unsigned"
    assert "does not exist" in host.last()["message"]


def test_ssh_repos_use_the_deploy_key_and_known_hosts(tmp_path: Path) -> None:
    config = PullConfig(repo="ssh://git@git.example/team/gpu.git", host="n1",
                        deploy_key="/etc/gpuprov/deploy key", state_dir=str(tmp_path),
                        path="/etc/gpuprov/pull.yml")
    env = PullGit(config)._ssh_env()
    assert shlex.split(env["GIT_SSH_COMMAND"]) == [
        "ssh", "-i", "/etc/gpuprov/deploy key", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=/etc/gpuprov/pull_known_hosts", "-o", "BatchMode=yes"]
    assert PullGit(PullConfig(repo="https://x/y.git", host="n1"))._ssh_env() == {}
