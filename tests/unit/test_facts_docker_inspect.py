"""DockerInspect: DockerImage and ContainerState answered by one `docker inspect`
(canned outputs of docker <= 27 and later, and the command itself)."""

from __future__ import annotations

import json

import pytest

from gpuprov.facts.base import FactError, gather_script, parse_batch
from gpuprov.facts.docker import (
    DOCKER_INSPECT,
    ContainerInfo,
    ContainerState,
    ContainerStatus,
    DockerImage,
    DockerImageState,
    ImageInfo,
)

IMAGE = "ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"
IMAGE_ID = "sha256:" + "5a" * 32
DIGEST = "ghcr.io/example-lab/pytorch-cuda@sha256:" + "d1" * 32
IMAGE_LINE = json.dumps({"id": IMAGE_ID, "tags": [IMAGE], "digests": [DIGEST], "state": None,
                         "labels": {"org.opencontainers.image.title": "x"}, "ports": None})
CONTAINER_LINE = json.dumps({
    "id": "cd" * 32, "tags": None, "digests": None,
    "state": {"status": "running", "running": True}, "labels": {"gpuprov.spec": "ab"},
    "ports": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8888"}]}})
DOWN = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
        "daemon running?")

FACTS = [DockerImage(IMAGE), ContainerState("gpuprov-jupyter")]
IMAGE_INFO = ImageInfo(IMAGE_ID, (IMAGE,), (DIGEST,))
RUNNING = ContainerInfo(True, "running", (("gpuprov.spec", "ab"),),
                        frozenset({"127.0.0.1:8888->8888/tcp"}))


def answers(output: str, code: int) -> list[object]:
    parts = DOCKER_INSPECT.split(FACTS, output, code)
    return [f.process(text, rc) for f, (text, rc) in zip(FACTS, parts, strict=True)]


def test_one_command_for_both_never_the_environment() -> None:
    shell = DOCKER_INSPECT.command(FACTS).shell()
    assert shell.startswith("command -v docker >/dev/null 2>&1 || { echo no-docker; exit 0; }; "
                            "docker inspect --format '")
    assert shell.endswith(f"' -- {IMAGE} gpuprov-jupyter 2>&1")
    assert "Env" not in shell and "--type" not in shell
    script, _ = gather_script(FACTS)
    assert script.count("docker inspect") == 1


@pytest.mark.parametrize("word", ["Error: No such object", "error: no such object"])
def test_both_found_or_either_missing(word: str) -> None:
    assert answers(f"{IMAGE_LINE}\n{CONTAINER_LINE}\n", 0) == [
        DockerImageState("ok", IMAGE_INFO), ContainerStatus("ok", RUNNING)]
    # docker prints every object found, then the names it did not find, and exits 1
    assert answers(f"{IMAGE_LINE}\n{word}: gpuprov-jupyter\n", 1) == [
        DockerImageState("ok", IMAGE_INFO), ContainerStatus("ok")]
    assert answers(f"{CONTAINER_LINE}\n{word}: {IMAGE}\n", 1) == [
        DockerImageState("ok"), ContainerStatus("ok", RUNNING)]
    # nothing found: the template's output is one empty line
    assert answers(f"\n{word}: {IMAGE}\n{word}: gpuprov-jupyter\n", 1) == [
        DockerImageState("ok"), ContainerStatus("ok")]


def test_no_docker_and_daemon_down_reach_every_member() -> None:
    assert answers("no-docker\n", 0) == [
        DockerImageState("absent", message="docker is not installed"),
        ContainerStatus("absent", message="docker is not installed")]
    assert answers(f"\n{DOWN}\n{DOWN}\n", 1) == [
        DockerImageState("down", message=DOWN), ContainerStatus("down", message=DOWN)]
    denied = ("permission denied while trying to connect to the Docker daemon socket at "
              "unix:///var/run/docker.sock")
    # one member missing, the other not answered: it is down, not missing
    assert answers(f"\nError: No such object: {IMAGE}\n{denied}\n", 1) == [
        DockerImageState("ok"), ContainerStatus("down", message=denied)]


def test_objects_docker_did_not_attribute_are_a_fact_error() -> None:
    with pytest.raises(FactError, match="printed 1 objects for 2 found"):
        answers(f"{IMAGE_LINE}\ntemplate parsing error: template: :1: bad\n", 1)


def test_gathered_together_through_a_fake_docker(tmp_path) -> None:
    """The facts script runs the joint command once; each fact reads its part."""
    import subprocess

    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\n"
                    'echo "$*" >> "$0.calls"\n'
                    f"printf '%s\\n' '{IMAGE_LINE}'\n"
                    "echo 'Error: No such object: gpuprov-jupyter' >&2; exit 1\n")
    fake.chmod(0o755)
    script, marker = gather_script(FACTS)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout
    got = parse_batch(FACTS, out, marker)
    assert got == {FACTS[0]: DockerImageState("ok", IMAGE_INFO),
                   FACTS[1]: ContainerStatus("ok")}
    [call] = (tmp_path / "docker.calls").read_text().splitlines()
    assert call.startswith("inspect --format ") and call.endswith(f"-- {IMAGE} gpuprov-jupyter")


def test_a_label_that_reads_like_an_error_is_still_an_object() -> None:
    line = json.dumps({"id": "cd" * 32, "tags": None, "digests": None,
                       "state": {"status": "running", "running": True},
                       "labels": {"note": f"Error: No such object: {IMAGE}"}, "ports": {}})
    image, container = answers(f"{IMAGE_LINE}\n{line}\n", 0)
    assert image == DockerImageState("ok", IMAGE_INFO)
    assert container.container.label("note") == f"Error: No such object: {IMAGE}"
