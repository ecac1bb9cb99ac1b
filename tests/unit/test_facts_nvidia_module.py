"""LoadedModule: which nvidia kernel module the running kernel has loaded, read
from /sys/module/nvidia/version and /proc/driver/nvidia/version (canned outputs
of both formats, either file alone, none, garbage), and the probe run by a real
/bin/sh on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuprov.facts.base import gather_script, parse_batch
from gpuprov.facts.nvidia import PROC_DRIVER_VERSION, SYS_MODULE_VERSION, LoadedModule

# /proc/driver/nvidia/version as the modules print it: "NVRM version: %s\nGCC version:  %s\n"
# with pNVRM_ID of the open modules, of the proprietary ones, and of an arm64 host.
PROC_OPEN = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  "
             "(dvs-builder@U22-I3-B17-02-5)  Tue Sep 23 09:55:41 UTC 2025\n"
             "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04) \n")
PROC_PROPRIETARY = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.274.02  "
                    "Thu Sep  4 11:17:38 UTC 2025\n"
                    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14+deb12u1) \n")
PROC_ARM = ("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  570.195.03  Release Build  "
            "(dvs-builder@U16-I1-N07-12-3)  Fri Sep 19 02:39:11 UTC 2025\n"
            "GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04.2) \n")


def test_command_reads_the_kernels_files_and_runs_no_nvidia_smi() -> None:
    command = LoadedModule().command().shell()
    assert command == f"cat {SYS_MODULE_VERSION} {PROC_DRIVER_VERSION}"
    assert "nvidia-smi" not in command and not LoadedModule.sudo and LoadedModule.runs is None


@pytest.mark.parametrize(("output", "version"), [
    # both files: what a host with the module loaded answers (cat exits 0)
    ("580.95.05\n" + PROC_OPEN, "580.95.05"),
    # /sys/module alone (what the test fleet's hosts have), /proc alone (no sysfs)
    ("580.95.05\n", "580.95.05"),
    (PROC_OPEN, "580.95.05"),
    (PROC_PROPRIETARY, "535.274.02"),
    (PROC_ARM, "570.195.03"),
    ("535.274.02\n" + PROC_PROPRIETARY, "535.274.02"),
    # /sys/module first: the module that answers is the one loaded (they never differ on a
    # real kernel; on the test fleet /proc is the real machine's, /sys/module the host's)
    ("580.95.05\n" + PROC_PROPRIETARY, "580.95.05"),
])
def test_loaded_version(output: str, version: str) -> None:
    assert LoadedModule().process(output, 0) == version


@pytest.mark.parametrize("output", [
    "",                     # no nvidia module loaded: neither file exists (cat exits 1)
    "\n",
    "garbage\n",
    "580\n",                # not a version: a branch alone
    "version 580.95.05\n",  # a bare version or nothing
    "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n",
    "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  TempVersion  Release Build\n",
])
def test_no_module_or_garbage_is_none(output: str) -> None:
    assert LoadedModule().process(output, 1) is None


def test_garbage_in_sys_falls_back_to_proc() -> None:
    assert LoadedModule().process("(null)\n" + PROC_OPEN, 0) == "580.95.05"


def test_probe_really_run_agrees_with_this_machines_files() -> None:
    fact = LoadedModule()
    script, marker = gather_script([fact])
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    sys_file, proc_file = Path(SYS_MODULE_VERSION), Path(PROC_DRIVER_VERSION)
    text = "".join(p.read_text() for p in (sys_file, proc_file) if p.exists())
    assert parse_batch([fact], out.stdout, marker)[fact] == fact.process(text, 0)
    if not sys_file.exists() and not proc_file.exists():
        assert parse_batch([fact], out.stdout, marker)[fact] is None
