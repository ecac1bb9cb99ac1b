"""pull.yml: defaults, and every error naming the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.model.pullconfig import PullConfig, PullConfigError, load_pull_config


def load(tmp_path: Path, text: str) -> PullConfig:
    path = tmp_path / "pull.yml"
    path.write_text(text)
    return load_pull_config(path)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(PullConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "repo: https://git.example/team/gpu.git\nhost: node1\n")
    assert config == PullConfig(repo="https://git.example/team/gpu.git", host="node1",
                                path=str(tmp_path / "pull.yml"))
    assert (config.ref, config.inventory, config.playbook, config.mode) == (
        "main", "inventory.yml", "playbooks/site.yml", "apply")
    assert (config.interval, config.splay, config.verify, config.keep_reports) == (
        900, 300, "none", 20)
    assert config.state_dir == "/var/lib/gpuprov" and config.deploy_key is None
    assert config.textfile_dir == "/var/lib/node_exporter/textfile_collector"
    assert config.known_hosts == tmp_path / "pull_known_hosts"


def test_every_key(tmp_path: Path) -> None:
    signers = tmp_path / "signers"
    config = load(tmp_path, f"""\
repo: ssh://git@git.example/team/gpu.git
ref: v1.2
inventory: hosts/lab.yml
playbook: playbooks/gpu.yml
host: node1
mode: check
interval: 600
splay: 0
verify: signed
allowed_signers: {signers}
deploy_key: /etc/gpuprov/deploy_key
keep_reports: 5
textfile_dir: /srv/prom
state_dir: /srv/gpuprov
""")
    assert (config.mode, config.verify, config.splay, config.keep_reports) == (
        "check", "signed", 0, 5)
    assert config.allowed_signers == str(signers)


@pytest.mark.parametrize(("text", "expected"), [
    ("repo: https://x/y.git\nhost: n\nintervall: 5\n",
     ":3: unknown key 'intervall'\n  hint: did you mean 'interval'?"),
    ("repo: https://x/y.git\nhost: n\nsplay: soon\n",
     ":3: splay: expected an integer, got str 'soon'"),
    ("repo: https://x/y.git\nhost: n\nsplay: true\n", ":3: splay: expected an integer"),
    ("repo: https://x/y.git\nhost: n\nkeep_reports: 0\n", ":3: keep_reports: 0 is below 1"),
    ("repo: https://x/y.git\nhost: n\nmode: push\n",
     ":3: mode: 'push' is not one of apply, check"),
    ("repo: https://x/y.git\nhost: n\nverify: yes\n",
     ":3: verify: 'yes' is not one of none, signed"),
    ("repo: https://x/y.git\nhost: [n]\n", ":2: host: expected a string, got a list"),
    ("host: n\n", ":1: 'repo' is required"),
    ("repo: https://x/y.git\n", ":1: 'host' is required"),
    ("repo: git.example:team/gpu\nhost: n\n", ":1: repo 'git.example:team/gpu' is not a git "
     "URL\n  hint: use https://, ssh://, git://, file:// or user@host:path"),
    ("repo: https://x/y.git\nhost: n\nplaybook: /etc/site.yml\n",
     ":3: playbook: '/etc/site.yml' must be a path inside the repository"),
    ("repo: https://x/y.git\nhost: n\ninventory: ../inv.yml\n",
     ":3: inventory: '../inv.yml' must be a path inside the repository"),
    ("repo: https://x/y.git\nhost: n\nstate_dir: var/lib\n",
     ":3: state_dir: 'var/lib' must be an absolute path"),
    ("repo: https://x/y.git\nhost: n\nref: --upload-pack=x\n",
     ":3: ref: '--upload-pack=x' is not a branch or tag name"),
    ("- repo\n", ":1: expected a mapping of settings, got a list"),
    ("repo: https://x/y.git\nhost: n\n  ref: main\n", ":3: invalid YAML"),
])
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text).startswith(f"{tmp_path / 'pull.yml'}{expected}")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PullConfigError, match="pull.yml: file not found"):
        load_pull_config(tmp_path / "pull.yml")


def test_signed_needs_allowed_signers(tmp_path: Path) -> None:
    message = error(tmp_path, "repo: https://x/y.git\nhost: n\nverify: signed\n")
    assert message.startswith(f"{tmp_path / 'pull.yml'}:3: verify: signed needs allowed_signers")


def test_deploy_key_may_be_null(tmp_path: Path) -> None:
    assert load(tmp_path, "repo: file:///srv/r\nhost: n\ndeploy_key: null\n").deploy_key is None


def test_scp_like_ssh_urls(tmp_path: Path) -> None:
    assert load(tmp_path, "repo: git@git.example:team/gpu.git\nhost: n\n").repo == \
        "git@git.example:team/gpu.git"
