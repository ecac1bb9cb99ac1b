"""Versions of the container runtimes installed (`gpuprov facts`): docker's
and containerd's clients, which answer without a running daemon."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuprov.command import Command
from gpuprov.facts.base import Fact

# "Docker version 27.3.1, build ce12230" (docker-ce), "Docker version
# 20.10.24+dfsg1, build 297e128" (Debian's docker.io); RHEL's podman-docker
# shim answers "podman version 4.9.4-rhel".
_DOCKER = re.compile(r"^(Docker|podman) version ([^\s,]+)", re.MULTILINE)
# "containerd containerd.io 1.7.27 05044ec..." (docker's repository),
# "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1" (Debian)
_CONTAINERD = re.compile(r"^containerd\s+\S+\s+v?(\S+)", re.MULTILINE)


def _version_of(tool: str) -> Command:
    # Absent: no output at all, which reads as None; stderr is the batch's to drop.
    return Command.script(f"command -v {tool} >/dev/null 2>&1 || exit 0; {tool} --version")


@dataclass(frozen=True)
class DockerVersion(Fact["str | None"]):
    """The docker client's version ('27.3.1'), 'podman 4.9.4' where docker is
    podman's shim, None when there is no docker command."""

    def command(self) -> Command:
        return _version_of("docker")

    def process(self, output: str, exit_code: int) -> str | None:
        match = _DOCKER.search(output)
        if not match:
            return None
        return match.group(2) if match.group(1) == "Docker" else f"podman {match.group(2)}"


@dataclass(frozen=True)
class ContainerdVersion(Fact["str | None"]):
    """containerd's version ('1.7.27'), None when it is not installed."""

    def command(self) -> Command:
        return _version_of("containerd")

    def process(self, output: str, exit_code: int) -> str | None:
        match = _CONTAINERD.search(output)
        return match.group(1) if match else None
