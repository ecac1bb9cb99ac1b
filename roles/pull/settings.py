"""The pull role's variables, read and checked once, and the files it writes
on the host (paths shared with `gpuprov pull`, which reads pull.yml).

Pure functions of a host's variables: the tasks use them, the tests call them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from gpuprov.model.pullconfig import REPO_URL

VENV = "/opt/gpuprov"
PROGRAM = f"{VENV}/bin/gpuprov"
WHEELS = f"{VENV}/wheels"
CONFIG_DIR = "/etc/gpuprov"
CONFIG = f"{CONFIG_DIR}/pull.yml"
SIGNERS = f"{CONFIG_DIR}/pull-allowed-signers"
DEPLOY_KEY = f"{CONFIG_DIR}/pull-deploy-key"
#: the git server's host key for an ssh repository: `gpuprov pull` checks it
#: there (beside pull.yml), never accepting a key on first use
KNOWN_HOSTS = f"{CONFIG_DIR}/pull_known_hosts"
NAME = "gpuprov-pull"
SERVICE_UNIT = f"/etc/systemd/system/{NAME}.service"
TIMER = f"{NAME}.timer"
TIMER_UNIT = f"/etc/systemd/system/{TIMER}"
CRON = f"/etc/cron.d/{NAME}"
LOG = f"/var/log/{NAME}.log"

_SCHEMES = ("git://", "https://", "ssh://", "file://")
_SSH_URL = re.compile(r"ssh://(?:[^@/]+@)?(\[[^]]+\]|[^:/]+)(?::(\d+))?/")
_SCP_LIKE = re.compile(r"[\w.-]+@([\w.-]+):[^/\s]")
_MODES = ("apply", "check")
_VERIFY = ("none", "signed")
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


class PullVarError(Exception):
    """A variable's value is refused: its name, why, and what would do."""

    def __init__(self, name: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{name}: {message}")
        self.name, self.message, self.hint = name, message, hint


@dataclass(frozen=True)
class PullSettings:
    repo: str
    ref: str
    inventory: str
    playbook: str
    mode: str
    interval: int
    splay: int
    verify: str
    allowed_signers: tuple[str, ...]
    deploy_key: str            # controller path, "" for none
    known_hosts: tuple[str, ...]
    keep_reports: int
    textfile_dir: str
    wheelhouse: str            # controller directory
    repacked: bool


def _text(vars: Mapping[str, Any], name: str, hint: str | None = None) -> str:
    value = vars[name]
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\n\0"):
        raise PullVarError(name, "must be a non-empty string on one line", hint)
    return value.strip()


def _whole(vars: Mapping[str, Any], name: str, least: int, hint: str) -> int:
    value = vars[name]
    text = str(value).strip()
    # -e name=value gives strings: "900"
    if isinstance(value, bool) or not isinstance(value, int | str) or not text.isdigit() \
            or int(text) < least:
        raise PullVarError(name, f"must be a whole number of seconds, at least {least}", hint)
    return int(text)


def _choice(vars: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = vars[name]
    if value not in choices:
        raise PullVarError(name, f"must be one of {', '.join(choices)}")
    return str(value)


def _flag(vars: Mapping[str, Any], name: str) -> bool:
    value = vars[name]
    text = str(value).strip().lower()
    if isinstance(value, bool):
        return value
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise PullVarError(name, "must be true or false")


def _relative(vars: Mapping[str, Any], name: str, example: str) -> str:
    value = _text(vars, name, f"a path inside the repository, e.g. {example}")
    if value.startswith("/") or ".." in value.split("/"):
        raise PullVarError(name, "must be a path inside the repository (relative, no ..)",
                           f"e.g. {example}")
    return value


def _signers(vars: Mapping[str, Any]) -> tuple[str, ...]:
    value = vars["pull_allowed_signers"]
    hint = 'a list of lines like "alice@example.com ssh-ed25519 AAAA..."'
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise PullVarError("pull_allowed_signers", "must be a list of allowed-signers lines",
                           hint)
    lines = []
    for item in value:
        if not isinstance(item, str) or "\n" in item or len(item.split()) < 3:
            raise PullVarError("pull_allowed_signers",
                               f"{item!r} is not an allowed-signers line "
                               "(principal, key type, key)", hint)
        lines.append(item.strip())
    return tuple(lines)


def settings(vars: Mapping[str, Any]) -> PullSettings:
    """Every variable checked; PullVarError names the first one refused."""
    repo = _text(vars, "pull_repo", "the team's gpuprov repository, e.g. "
                 "https://git.example.com/team/gpu-fleet.git")
    if not REPO_URL.fullmatch(repo):
        raise PullVarError("pull_repo", f"must be a {', '.join(_SCHEMES)} URL or "
                           "user@host:path", "e.g. ssh://git@git.example.com/team/gpu-fleet.git")
    verify = _choice(vars, "pull_repo_verify", _VERIFY)
    signers = _signers(vars)
    if verify == "signed" and not signers:
        raise PullVarError("pull_repo_verify", "signed needs the keys of who may sign: "
                           "pull_allowed_signers is empty",
                           'pull_allowed_signers: ["alice@example.com ssh-ed25519 AAAA..."]')
    key = vars["pull_deploy_key"]
    if not isinstance(key, str) or "\n" in key:
        raise PullVarError("pull_deploy_key", "must be the path of a private key file on "
                           "the controller, or empty")
    known = vars["pull_known_hosts"]
    if isinstance(known, str) or not isinstance(known, list | tuple) or any(
            not isinstance(k, str) or "\n" in k or len(k.split()) < 3 for k in known):
        raise PullVarError("pull_known_hosts", "must be a list of known_hosts lines",
                           'e.g. ["git.example.com ssh-ed25519 AAAA..."] (ssh-keyscan HOST, '
                           "fingerprint checked)")
    textfile_dir = _text(vars, "pull_textfile_dir")
    if not textfile_dir.startswith("/") or posixpath.normpath(textfile_dir) != textfile_dir \
            or textfile_dir == "/":
        raise PullVarError("pull_textfile_dir", "must be an absolute, normalised directory "
                           "path other than /", "node_exporter's --collector.textfile.directory")
    wheelhouse = vars["pull_wheelhouse"]
    if not isinstance(wheelhouse, str) or not wheelhouse:
        raise PullVarError("pull_wheelhouse", "is not set: the pull role runs through "
                           "`gpuprov pull-setup`, which makes the wheels it installs",
                           "gpuprov pull-setup INVENTORY [-l PATTERN] [--wheelhouse DIR]")
    return PullSettings(
        repo=repo, ref=_text(vars, "pull_ref", "a branch or tag, e.g. main"),
        inventory=_relative(vars, "pull_inventory", "inventory.yml"),
        playbook=_relative(vars, "pull_playbook", "playbooks/site.yml"),
        mode=_choice(vars, "pull_mode", _MODES),
        interval=_whole(vars, "pull_interval", 1, "e.g. pull_interval: 900"),
        splay=_whole(vars, "pull_splay", 0, "e.g. pull_splay: 300 (0: no delay)"),
        verify=verify, allowed_signers=signers, deploy_key=key.strip(),
        known_hosts=tuple(k.strip() for k in known),
        keep_reports=_whole(vars, "pull_keep_reports", 1, "e.g. pull_keep_reports: 20"),
        textfile_dir=textfile_dir, wheelhouse=wheelhouse,
        repacked=_flag(vars, "pull_wheelhouse_repacked"))


def config_text(s: PullSettings, host: str) -> str:
    """/etc/gpuprov/pull.yml: what `gpuprov pull` reads on the host."""
    data: dict[str, Any] = {
        "repo": s.repo, "ref": s.ref, "inventory": s.inventory, "playbook": s.playbook,
        "host": host, "mode": s.mode, "interval": s.interval, "splay": s.splay,
        "verify": s.verify, "allowed_signers": SIGNERS}
    if s.deploy_key:
        data["deploy_key"] = DEPLOY_KEY
    data.update({"keep_reports": s.keep_reports, "textfile_dir": s.textfile_dir})
    return ("# written by `gpuprov pull-setup` (the pull role): change the inventory's\n"
            "# pull_* variables and run it again rather than editing this file\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def signers_text(s: PullSettings) -> str:
    return "".join(line + "\n" for line in s.allowed_signers)


def cron_schedule(interval: int) -> tuple[int, str]:
    """(minutes, the cron schedule) of a run every `interval` seconds: cron counts
    minutes, and a step of 60 or more minutes is no minute step: hours then."""
    minutes = max(1, interval // 60)
    if minutes < 60:
        return minutes, f"*/{minutes} * * * *"
    hours = minutes // 60
    if hours >= 24:
        return 24 * 60, "0 0 * * *"
    return hours * 60, f"0 */{hours} * * *"


def ssh_server(repo: str) -> str | None:
    """The git server of an ssh repository as known_hosts names it (host, or
    [host]:port off port 22); None for other repositories."""
    url = _SSH_URL.match(repo)
    if url:
        host, port = url[1].strip("[]"), url[2]
        return f"[{host}]:{port}" if port and port != "22" else host
    scp = _SCP_LIKE.match(repo)
    return scp[1] if scp else None
