"""Role gpu_image against canned `docker image inspect` answers: pulled when
missing, left alone when right, re-pulled and digest-checked when the digest
differs, loaded from a controller tarball on air-gapped sites."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from gpuprov.engine.context import RoleFailed
from gpuprov.facts.docker import ContainerGpuTest, DockerImage, DockerImageState, ImageInfo
from gpuprov.ops.docker import ImageError, ImageLoaded, ImagePulled
from tests.doubles.make_image_archive import make_image_archive
from tests.unit.role_facts import ALL_DISTROS
from tests.unit.role_harness import RolePlan, plan_role, system_for

REF = "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime"      # the role's default
LAB = "ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"
DIGEST = "sha256:" + "d1" * 32
OTHER_DIGEST = "sha256:" + "0f" * 32
IMAGE_ID = "sha256:" + "5a" * 32


def run(facts: dict, distro: str = "ubuntu2404", check: bool = False, **vars: object
        ) -> RolePlan:
    return plan_role("gpu_image", system_for(distro), facts, vars=vars, check=check)


def present(ref: str, *digests: str, image_id: str = IMAGE_ID) -> DockerImageState:
    return DockerImageState("ok", ImageInfo(image_id, (ref,), digests))


def digest_check(ref: str, repo: str, digest: str) -> str:
    problem = (f"gpuprov: the registry served {ref} with a digest other than {digest}; "
               "the tag was moved: review the new image and update gpu_image_digest "
               "(the unreviewed image was untagged)")
    needle = f'"{repo}@{digest}"'
    return (f"docker image inspect {ref} | grep -qF {shlex.quote(needle)} || "
            f"{{ docker rmi {ref} >/dev/null 2>&1; echo {shlex.quote(problem)} >&2; exit 1 ; }}")


def arch_check(ref: str, arch: str = "amd64") -> str:
    problem = (f"gpuprov: {ref} is not built for linux/{arch}, this host's platform: pin a "
               f"multi-platform image or the digest of its linux/{arch} manifest (the wrong "
               "image was untagged)")
    needle = f'"Architecture": "{arch}"'
    return (f"docker image inspect {ref} | grep -qF {shlex.quote(needle)} || "
            f"{{ docker rmi {ref} >/dev/null 2>&1; echo {shlex.quote(problem)} >&2; exit 1 ; }}")


def pulled(ref: str, *checks: str, arch: str = "amd64") -> list[str]:
    """The pull of `ref` for the host's platform, `checks`, then the platform's check."""
    return [f"docker pull --quiet --platform=linux/{arch} {ref}", *checks, arch_check(ref, arch)]


# ---------------------------------------------------------------- pull

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_missing_image_is_pulled(distro: str) -> None:
    plan = run({DockerImage(REF): DockerImageState("ok")}, distro)
    assert plan.commands == pulled(REF)
    [change] = plan.changes
    assert (change.resource, change.action) == (f"docker image {REF}", "pull")
    assert change.summary == f"docker pull {REF} (not present)"
    assert change.unknown is None
    assert change.invalidates == (DockerImage, ContainerGpuTest)


def test_missing_image_with_digest_is_pulled_and_checked() -> None:
    plan = run({DockerImage(LAB): DockerImageState("ok")}, gpu_image=LAB, gpu_image_digest=DIGEST)
    assert plan.commands == pulled(
        LAB, digest_check(LAB, "ghcr.io/example-lab/pytorch-cuda", DIGEST))


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_present_image_is_never_pulled_again(distro: str) -> None:
    assert run({DockerImage(REF): present(REF, f"pytorch/pytorch@{OTHER_DIGEST}")},
               distro).changes == []
    # with a digest: the one the image carries
    assert run({DockerImage(REF): present(REF, f"pytorch/pytorch@{DIGEST}")}, distro,
               gpu_image_digest=DIGEST).changes == []
    # docker.io/ spelled out in RepoDigests is the same repository
    assert run({DockerImage(REF): present(REF, f"docker.io/pytorch/pytorch@{DIGEST}")},
               distro, gpu_image_digest=DIGEST).changes == []


def test_digest_in_the_reference_itself() -> None:
    ref = f"{LAB}@{DIGEST}"
    assert run({DockerImage(ref): present(LAB, f"ghcr.io/example-lab/pytorch-cuda@{DIGEST}")},
               gpu_image=ref).changes == []
    plan = run({DockerImage(ref): DockerImageState("ok")}, gpu_image=ref)
    assert plan.commands == pulled(
        ref, digest_check(ref, "ghcr.io/example-lab/pytorch-cuda", DIGEST))


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_other_digest_is_repulled_and_checked(distro: str) -> None:
    facts = {DockerImage(REF): present(REF, f"pytorch/pytorch@{OTHER_DIGEST}")}
    plan = run(facts, distro, gpu_image_digest=DIGEST)
    assert plan.commands == pulled(REF, digest_check(REF, "pytorch/pytorch", DIGEST))
    [change] = plan.changes
    assert change.action == "repull"
    assert change.summary == (f"docker pull {REF} (present as sha256:5a5a5a5a5a5a "
                              f"without digest {DIGEST})")


@pytest.mark.parametrize(("state", "unknown"), [
    (DockerImageState("absent", message="docker is not installed"),
     "docker is not installed yet: depends on the container_toolkit role"),
    (DockerImageState("down", message="Cannot connect to the Docker daemon at "
                                      "unix:///var/run/docker.sock. Is the docker daemon "
                                      "running?"),
     "the docker daemon does not answer (Cannot connect to the Docker daemon at "
     "unix:///var/run/docker.sock. Is the docker daemon running?): depends on docker running"),
])
def test_docker_not_usable_yet_is_unknown(state: DockerImageState, unknown: str) -> None:
    plan = run({DockerImage(REF): state}, check=True)
    [change] = plan.changes
    assert change.unknown == unknown
    assert plan.commands == pulled(REF)


@pytest.mark.parametrize(("var", "value", "message"), [
    ("gpu_image", "", "gpu_image='': no image given"),
    ("gpu_image", "   ", "gpu_image='   ': no image given"),
])
def test_no_image_is_refused(var: str, value: str, message: str) -> None:
    with pytest.raises(RoleFailed) as exc:
        run({}, **{var: value})
    assert exc.value.message == f"gpu-01: role gpu_image: {message}"
    assert exc.value.hint == "set gpu_image to the team's registry/repo:tag"


@pytest.mark.parametrize(("vars", "match"), [
    ({"gpu_image": "Lab/PyTorch:latest"}, "not a docker image reference"),
    ({"gpu_image_digest": "sha256:1234"}, r"is not sha256:<64 hex digits>"),
    ({"gpu_image": f"{LAB}@{DIGEST}", "gpu_image_digest": OTHER_DIGEST},
     f"names digest {DIGEST}, but the digest variable says {OTHER_DIGEST}"),
])
def test_bad_reference_or_digest(vars: dict, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        run({}, **vars)


# ---------------------------------------------------------------- docker load

@pytest.fixture
def archive(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "pytorch-cuda.tar"
    image_id = make_image_archive(path, [LAB])
    return str(path), image_id


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_archive_is_loaded_when_missing(distro: str, archive: tuple[str, str]) -> None:
    path, image_id = archive
    plan = run({DockerImage(LAB): DockerImageState("ok")}, distro, gpu_image=LAB,
               gpu_image_archive=path)
    [planned] = plan.ops
    assert isinstance(planned.op, ImageLoaded)
    problem = (f"gpuprov: {LAB} is not image {image_id} after docker load of "
               "pytorch-cuda.tar")
    needle = f'"Id": "{image_id}"'
    assert plan.commands == [
        "docker load --quiet",
        f"docker image inspect {LAB} | grep -qF {shlex.quote(needle)} || "
        f"{{ echo {shlex.quote(problem)} >&2; exit 1 ; }}",
    ]
    [change] = plan.changes
    load, check = change.steps
    # streamed from the controller file, not held in memory
    assert (load.stdin_file, load.stdin) == (path, None)
    assert check.stdin_file is None
    assert change.action == "load"
    assert change.summary == "docker load pytorch-cuda.tar (0 MiB, not present)"


def test_archive_not_loaded_again_when_the_image_id_matches(archive: tuple[str, str]) -> None:
    path, image_id = archive
    facts = {DockerImage(LAB): present(LAB, image_id=image_id)}
    assert run(facts, gpu_image=LAB, gpu_image_archive=path).changes == []


def test_archive_loaded_over_another_image(archive: tuple[str, str]) -> None:
    path, image_id = archive
    plan = run({DockerImage(LAB): present(LAB)}, gpu_image=LAB, gpu_image_archive=path)
    [change] = plan.changes
    assert change.summary == (f"docker load pytorch-cuda.tar (0 MiB, present as "
                              f"sha256:5a5a5a5a5a5a, archive has {image_id[:19]})")
    assert plan.commands[0] == "docker load --quiet"


def test_archive_with_docker_absent_is_unknown(archive: tuple[str, str]) -> None:
    path, _ = archive
    plan = run({DockerImage(LAB): DockerImageState("absent", message="docker is not installed")},
               gpu_image=LAB, gpu_image_archive=path, check=True)
    assert plan.changes[0].unknown == ("docker is not installed yet: depends on the "
                                       "container_toolkit role")


def test_archive_of_another_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.tar"
    make_image_archive(path, ["ghcr.io/example-lab/other:1.0"])
    with pytest.raises(ImageError, match=r"holds ghcr.io/example-lab/other:1.0, not "
                                         r"ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"):
        run({}, gpu_image=LAB, gpu_image_archive=str(path))


def test_archive_and_digest_together_are_refused(archive: tuple[str, str]) -> None:
    with pytest.raises(ImageError, match="cannot be checked for an image loaded from"):
        run({}, gpu_image=LAB, gpu_image_archive=archive[0], gpu_image_digest=DIGEST)


def test_archive_that_is_not_a_docker_save_tarball(tmp_path: Path) -> None:
    path = tmp_path / "notes.tar"
    path.write_bytes(b"not a tarball")
    with pytest.raises(ImageError, match="is not a `docker save` tarball"):
        run({}, gpu_image=LAB, gpu_image_archive=str(path))
    with pytest.raises(ImageError, match="gpu_image_archive is a `docker save` tarball"):
        run({}, gpu_image=LAB, gpu_image_archive=str(tmp_path / "missing.tar"))


def test_pull_op_without_archive() -> None:
    plan = run({DockerImage(REF): DockerImageState("ok")})
    [planned] = plan.ops
    assert isinstance(planned.op, ImagePulled)
    assert planned.op.facts() == [DockerImage(REF)]


# ---------------------------------------------------------------- the check steps, really run

def fake_docker(tmp_path: Path, inspect: list) -> dict:
    """A `docker` whose `image inspect` prints `inspect` as docker does (indented JSON)."""
    (tmp_path / "inspect.json").write_text(json.dumps(inspect, indent=4) + "\n")
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\n"
                    f"echo \"$*\" >> {tmp_path}/calls\n"
                    f"[ \"$1 $2\" = 'image inspect' ] && exec cat {tmp_path}/inspect.json\n"
                    "exit 2\n")
    fake.chmod(0o755)
    return {"PATH": f"{tmp_path}:/usr/bin:/bin"}


def shell(step, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", step.command.shell()], capture_output=True,
                          text=True, env=env)


def test_digest_check_step_passes_and_fails_in_a_shell(tmp_path: Path) -> None:
    plan = run({DockerImage(REF): DockerImageState("ok")}, gpu_image_digest=DIGEST)
    check = plan.changes[0].steps[1]
    good = fake_docker(tmp_path, [{"Id": IMAGE_ID, "RepoTags": [REF],
                                   "RepoDigests": [f"pytorch/pytorch@{DIGEST}"]}])
    assert shell(check, good).returncode == 0
    moved = fake_docker(tmp_path, [{"Id": IMAGE_ID, "RepoTags": [REF],
                                    "RepoDigests": [f"pytorch/pytorch@{OTHER_DIGEST}"]}])
    result = shell(check, moved)
    assert result.returncode == 1
    assert result.stderr == (f"gpuprov: the registry served {REF} with a digest other than "
                             f"{DIGEST}; the tag was moved: review the new image and update "
                             "gpu_image_digest (the unreviewed image was untagged)\n")
    assert (tmp_path / "calls").read_text().splitlines()[-1] == f"rmi {REF}"


def test_load_check_step_passes_and_fails_in_a_shell(tmp_path: Path,
                                                     archive: tuple[str, str]) -> None:
    path, image_id = archive
    plan = run({DockerImage(LAB): DockerImageState("ok")}, gpu_image=LAB, gpu_image_archive=path)
    check = plan.changes[0].steps[1]
    assert shell(check, fake_docker(tmp_path, [{"Id": image_id, "RepoTags": [LAB]}])
                 ).returncode == 0
    result = shell(check, fake_docker(tmp_path, [{"Id": IMAGE_ID, "RepoTags": [LAB]}]))
    assert result.returncode == 1
    assert result.stderr == (f"gpuprov: {LAB} is not image {image_id} after docker load of "
                             "pytorch-cuda.tar\n")
