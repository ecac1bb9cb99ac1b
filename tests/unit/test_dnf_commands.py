"""dnf as gpuprov runs it on RHEL 9 (ops/dnf_commands.py): network limits on
every command line, and a failing repository named with what to do. The
outputs are dnf 4's (RHEL 9) messages as it prints them; no RHEL host runs
in the fleet, so they are written down from dnf's format, not captured."""

from __future__ import annotations

import pytest

from gpuprov.ops import dnf as dnf_ops
from gpuprov.ops.base import Failure
from gpuprov.ops.dnf_commands import dnf, dnf_failure, dnf_step
from tests.unit.role_facts import DNF

CUDA = "https://developer.download.nvidia.com/compute/cuda/repos/rhel9/x86_64"
METADATA_TIMEOUT = f"""\
Errors during downloading metadata for repository 'cuda-rhel9-x86_64':
  - Curl error (28): Timeout was reached for {CUDA}/repodata/repomd.xml \
[Operation timed out after 15000 milliseconds with 0 out of 0 bytes received]
Error: Failed to download metadata for repo 'cuda-rhel9-x86_64': Cannot download repomd.xml: \
Cannot download repodata/repomd.xml: All mirrors were tried
"""
METADATA_500 = f"""\
Errors during downloading metadata for repository 'cuda-rhel9-x86_64':
  - Status code: 500 for {CUDA}/repodata/repomd.xml (IP: 152.195.19.142)
Error: Failed to download metadata for repo 'cuda-rhel9-x86_64': Cannot download repomd.xml: \
Cannot download repodata/repomd.xml: All mirrors were tried
"""
PACKAGE_500 = f"""\
Error: Error downloading packages:
  Status code: 500 for {CUDA}/nvidia-driver-580.95.05-1.el9.x86_64.rpm (IP: 152.195.19.142)
"""


@pytest.mark.parametrize(("args", "packages", "expected"), [
    (("install",), ["nvidia-open"], f"{DNF} install -- nvidia-open"),
    (("module", "enable", "nvidia-driver:580-open"), [],
     f"{DNF} module enable nvidia-driver:580-open"),
    (("versionlock", "add"), ["a-1.0"], f"{DNF} versionlock add -- a-1.0"),
    (("remove",), ["a", "b"], f"{DNF} remove -- a b"),
])
def test_every_dnf_command_gives_up_on_a_silent_repository(
        args: tuple[str, ...], packages: list[str], expected: str) -> None:
    assert dnf(*args, packages=packages).shell() == expected
    assert DNF == "dnf -y --setopt=timeout=15 --setopt=retries=1"


def test_dnf_steps_are_explained() -> None:
    assert dnf_step("install", packages=["a"]).explain is dnf_failure
    assert dnf_ops.dnf is dnf    # the name roles call


def test_metadata_timeout_names_the_repository_and_its_url() -> None:
    got = dnf_failure(Failure(1, "", METADATA_TIMEOUT))
    assert got is not None
    assert got.reason == (f"dnf repository 'cuda-rhel9-x86_64' ({CUDA}) could not be reached: "
                          f"Curl error (28): Timeout was reached: {CUDA}/repodata/repomd.xml")
    assert got.hint is not None
    assert "dnf config-manager --set-disabled cuda-rhel9-x86_64" in got.hint


def test_metadata_500() -> None:
    got = dnf_failure(Failure(1, "", METADATA_500))
    assert got is not None and got.reason == (
        f"dnf repository 'cuda-rhel9-x86_64' ({CUDA}) answered HTTP 500: "
        f"{CUDA}/repodata/repomd.xml")


def test_package_download_500_names_the_repository_url() -> None:
    got = dnf_failure(Failure(1, "", PACKAGE_500))
    assert got is not None and got.reason == (
        f"dnf repository {CUDA} answered HTTP 500: "
        f"{CUDA}/nvidia-driver-580.95.05-1.el9.x86_64.rpm")
    assert got.hint is not None and "/etc/yum.repos.d" in got.hint


def test_other_failures_are_left_as_they_are() -> None:
    assert dnf_failure(Failure(1, "", "Error: Unable to find a match: nosuch\n")) is None
