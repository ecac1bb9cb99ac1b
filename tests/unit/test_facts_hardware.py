"""The facts `gpuprov facts` added (CPU, memory, disk, docker and containerd
versions), per distro: canned outputs in the kernel's and the tools' own
formats (tests/unit/data/facts/cpuinfo.*, meminfo.*; df, docker and
containerd lines below), and each probe's command run on this machine.

The cpuinfo and meminfo files are written in /proc's format for the machines
named (an Ubuntu 22.04 workstation with SMT, an Ubuntu 24.04 EPYC VM, Debian
12 on arm64, which prints no model name or topology, a 2-socket RHEL 9
server); /proc's format is the kernel's, so the live tests below parse this
machine's real files too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gpuprov.facts.base import FactError, gather_script, parse_batch
from gpuprov.facts.hardware import Cpu, CpuInfo, DiskSpace, DiskUsage, Memory, MemoryInfo
from gpuprov.facts.runtimes import ContainerdVersion, DockerVersion

DATA = Path(__file__).parent / "data" / "facts"


def run_here(fact: object) -> object:
    """The fact's probe run by sh on this machine, through the batch (as on a host)."""
    script, marker = gather_script([fact])  # type: ignore[list-item]
    out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True,
                         check=True).stdout
    return parse_batch([fact], out, marker)[fact]  # type: ignore[index]


# ---------------------------------------------------------------- cpu

@pytest.mark.parametrize(("name", "expected"), [
    ("ubuntu2204", CpuInfo("12th Gen Intel(R) Core(TM) i7-12700K", 1, 4, 8)),
    ("ubuntu2404", CpuInfo("AMD EPYC 7763 64-Core Processor", 1, 2, 4)),
    ("debian12-arm64", CpuInfo(None, 1, 4, 4)),
    ("rhel9", CpuInfo("Intel(R) Xeon(R) Platinum 8480+", 2, 4, 4)),
])
def test_cpu_per_distro(name: str, expected: CpuInfo) -> None:
    text = (DATA / f"cpuinfo.{name}").read_text()
    assert Cpu().process(text, 0) == expected


@pytest.mark.parametrize("name", ["ubuntu2204", "ubuntu2404", "debian12-arm64", "rhel9"])
def test_cpu_probe_keeps_what_the_parser_reads(name: str, tmp_path: Path) -> None:
    # The probe greps /proc/cpuinfo (flags stay on the host): its output reads the same.
    source = DATA / f"cpuinfo.{name}"
    command = Cpu().command().shell().replace("/proc/cpuinfo", str(source))
    grepped = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
    assert "flags" not in grepped
    assert Cpu().process(grepped, 0) == Cpu().process(source.read_text(), 0)


def test_cpu_without_processors_is_an_error() -> None:
    with pytest.raises(FactError, match="no processor"):
        Cpu().process("", 1)


def test_cpu_of_this_machine() -> None:
    info = run_here(Cpu())
    assert isinstance(info, CpuInfo)
    assert info.threads == os.cpu_count()
    assert 1 <= info.cores <= info.threads and info.sockets >= 1


# ---------------------------------------------------------------- memory

@pytest.mark.parametrize(("name", "expected"), [
    ("ubuntu2204", MemoryInfo(64000, 56761, 2047)),
    ("ubuntu2404", MemoryInfo(15990, 14635, 0)),
    ("debian12", MemoryInfo(7937, 7130, 952)),
    ("rhel9", MemoryInfo(515576, 498275, 4095)),
])
def test_memory_per_distro(name: str, expected: MemoryInfo) -> None:
    assert Memory().process((DATA / f"meminfo.{name}").read_text(), 0) == expected


def test_memory_without_memavailable_and_without_memtotal() -> None:
    assert Memory().process("MemTotal:  2048000 kB\n", 0) == MemoryInfo(2000, None, None)
    with pytest.raises(FactError, match="MemTotal"):
        Memory().process("", 2)


def test_memory_of_this_machine() -> None:
    info = run_here(Memory())
    assert isinstance(info, MemoryInfo)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    assert abs(info.total_mib - total) <= 1
    assert info.available_mib is not None and 0 < info.available_mib <= info.total_mib


# ---------------------------------------------------------------- disk

M = "@@gpuprov-df "
HEAD = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n"
DF = {
    "ubuntu2204": (f"{M}/\n{HEAD}/dev/mapper/ubuntu--vg-ubuntu--lv  102626232  38411356  "
                   "58955668      40% /\n"
                   f"{M}/srv/vision\n{HEAD}/dev/nvme1n1p1  3844640564 1210448184 "
                   "2438828812      34% /srv\n"),
    "ubuntu2404": f"{M}/\n{HEAD}/dev/root        30298176   5421380  24860412      18% /\n",
    "debian12": (f"{M}/\n{HEAD}/dev/sda1        61611820   9113264  49335172      16% /\n"
                 f"{M}/srv/lab\ndf: /srv/lab: No such file or directory\n"),
    "rhel9": (f"{M}/\n{HEAD}/dev/mapper/rhel-root  73364480  12077652  61286828      17% /\n"
              f"{M}/data/my lab\n{HEAD}/dev/sdb1  1921725440  1024  1921724416       1% "
              "/data/my lab\n"),
}


@pytest.mark.parametrize(("name", "paths", "expected"), [
    ("ubuntu2204", ("/", "/srv/vision"), (
        DiskSpace("/", "/dev/mapper/ubuntu--vg-ubuntu--lv", "/", 100220, 37511, 57573, 40),
        DiskSpace("/srv/vision", "/dev/nvme1n1p1", "/srv", 3754531, 1182078, 2381668, 34))),
    ("ubuntu2404", ("/",), (DiskSpace("/", "/dev/root", "/", 29588, 5294, 24277, 18),)),
    ("debian12", ("/", "/srv/lab"), (
        DiskSpace("/", "/dev/sda1", "/", 60167, 8899, 48178, 16),
        DiskSpace("/srv/lab", error="/srv/lab: No such file or directory"))),
    ("rhel9", ("/", "/data/my lab"), (
        DiskSpace("/", "/dev/mapper/rhel-root", "/", 71645, 11794, 59850, 17),
        DiskSpace("/data/my lab", "/dev/sdb1", "/data/my lab", 1876685, 1, 1876684, 1))),
])
def test_disk_per_distro(name: str, paths: tuple[str, ...],
                         expected: tuple[DiskSpace, ...]) -> None:
    assert DiskUsage(paths).process(DF[name], 0) == expected


def test_disk_of_this_machine_with_a_missing_path_and_a_space(tmp_path: Path) -> None:
    spaced = tmp_path / "my data"
    spaced.mkdir()
    root, data, missing = run_here(DiskUsage(("/", str(spaced), str(tmp_path / "nope"))))
    assert root.mount == "/" and root.size_mib and root.error is None
    assert data.path == str(spaced) and data.size_mib and data.error is None
    assert missing.size_mib is None and "No such file" in (missing.error or "")


# ---------------------------------------------------------------- docker, containerd

@pytest.mark.parametrize(("name", "output", "version"), [
    ("ubuntu2204 docker-ce", "Docker version 27.3.1, build ce12230\n", "27.3.1"),
    ("ubuntu2404 docker.io", "Docker version 26.1.3, build 26.1.3-0ubuntu1~24.04.1\n", "26.1.3"),
    ("debian12 docker.io", "Docker version 20.10.24+dfsg1, build 297e128\n", "20.10.24+dfsg1"),
    ("rhel9 podman-docker", "podman version 4.9.4-rhel\n", "podman 4.9.4-rhel"),
    ("not installed", "", None),
])
def test_docker_version(name: str, output: str, version: str | None) -> None:
    assert DockerVersion().process(output, 0) == version


@pytest.mark.parametrize(("name", "output", "version"), [
    ("ubuntu2204 containerd.io",
     "containerd containerd.io 1.7.22 7f7fdf5fed64eb6a7caf99b3e12efcf9d60e311c\n", "1.7.22"),
    ("ubuntu2404", "containerd github.com/containerd/containerd 1.7.12 \n", "1.7.12"),
    ("debian12", "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n",
     "1.6.20~ds1"),
    ("rhel9 containerd.io",
     "containerd containerd.io 1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182\n", "1.7.24"),
    ("v-prefixed", "containerd github.com/containerd/containerd v2.0.0 207ad711e\n", "2.0.0"),
    ("not installed", "", None),
])
def test_containerd_version(name: str, output: str, version: str | None) -> None:
    assert ContainerdVersion().process(output, 0) == version


def test_version_probes_answer_none_without_the_tool(tmp_path: Path) -> None:
    # PATH: an empty directory, so neither tool is found
    script, marker = gather_script([DockerVersion(), ContainerdVersion()])
    out = subprocess.run(["/bin/sh", "-s"], input=script, capture_output=True, text=True,
                         env={"PATH": str(tmp_path)}).stdout
    assert parse_batch([DockerVersion(), ContainerdVersion()], out, marker) == {
        DockerVersion(): None, ContainerdVersion(): None}
