# TEST DOUBLE for gpuprov's test fleet: docker resource limits. Never install on real hosts.
"""`docker run --memory/-m, --cpus, --shm-size, --pids-limit` and `docker update`:
the values parsed as the docker CLI parses them (binary sizes as go-units'
RAMInBytes, CPUs as a rational number of billionths), refused with docker's
words, and kept in the container's HostConfig as `docker inspect` shows them:
Memory and MemorySwap in bytes (swap as much again as memory, docker's default
without --memory-swap), NanoCpus, ShmSize (the daemon's default-shm-size,
else 64m), PidsLimit (null when there is none)."""

from __future__ import annotations

import os
import re
import sys
from fractions import Fraction
from typing import Any

from gpuprov_double_docker_state import effective_config, load_containers, save_containers

LIMIT_FLAGS = {"-m": "-m, --memory", "--memory": "-m, --memory", "--memory-swap": "--memory-swap",
               "--cpus": "--cpus", "--shm-size": "--shm-size", "--pids-limit": "--pids-limit"}
#: what `docker update` takes (the container's /dev/shm is fixed once it runs)
UPDATE_FLAGS = {"-m", "--memory", "--memory-swap", "--cpus", "--pids-limit"}
_SIZE = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
SHM_DEFAULT = 64 << 20
MEMORY_MIN = 6 << 20


class LimitError(Exception):
    """A value docker refuses: the message as it prints it, its exit status."""

    def __init__(self, message: str, code: int = 125) -> None:
        super().__init__(message)
        self.code = code


def ram_in_bytes(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size: '{text}'")
    try:
        number = float(match[1])
    except ValueError:
        raise ValueError(f"invalid size: '{text}'") from None
    return int(number * _UNITS[(match[3] or "").lower()])


def _flag_value(flag: str, value: str, command: str) -> int:
    """The number docker's flag parser makes of `value` (CLI errors: exit 125)."""
    try:
        if flag in ("-m", "--memory", "--memory-swap", "--shm-size"):
            if flag == "--memory-swap" and value == "-1":
                return -1
            return ram_in_bytes(value)
        if flag == "--cpus":
            try:
                cpus = Fraction(value)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"failed to parse {value} as a rational number") from None
            nano = cpus * 10 ** 9
            if nano.denominator != 1:
                raise ValueError("value is too precise")
            return int(nano)
        if not re.fullmatch(r"[+-]?\d+", value):
            raise ValueError(f'strconv.ParseInt: parsing "{value}": invalid syntax')
        return int(value)
    except ValueError as exc:
        raise LimitError(f'invalid argument "{value}" for "{LIMIT_FLAGS[flag]}" flag: {exc}\n'
                         f"See 'docker {command} --help'.") from None


def _check_cpus(nano: int, prefix: str) -> None:
    cpus = len(os.sched_getaffinity(0))
    if nano and not 10 ** 7 <= nano <= cpus * 10 ** 9:
        raise LimitError(f"{prefix}Error response from daemon: Range of CPUs is from 0.01 to "
                         f"{cpus}.00, as there are only {cpus} CPUs available")


def host_config(opts: dict[str, list[str]]) -> dict[str, Any]:
    """HostConfig's limit fields for `docker run` options (the last of a flag wins)."""
    def last(*flags: str) -> int | None:
        values = [(f, v) for f in flags for v in opts.get(f, [])]
        return _flag_value(*values[-1], "run") if values else None

    memory = last("-m", "--memory") or 0
    swap = last("--memory-swap")
    nano = last("--cpus") or 0
    shm = last("--shm-size")
    pids = last("--pids-limit")
    if memory and memory < MEMORY_MIN:
        raise LimitError("docker: Error response from daemon: Minimum memory limit allowed "
                         "is 6MB.")
    _check_cpus(nano, "docker: ")
    if shm is not None and shm < 0:
        raise LimitError("docker: Error response from daemon: SHM size can not be less than 0")
    if not shm:
        default = effective_config().get("default-shm-size")
        shm = ram_in_bytes(default) if default else SHM_DEFAULT
    if swap is None:
        swap = 2 * memory if memory else 0
    return {"Memory": memory, "MemorySwap": swap, "NanoCpus": nano, "ShmSize": shm,
            "PidsLimit": pids if pids and pids > 0 else None}


def cmd_update(args: list[str]) -> int:
    try:
        return _update(args)
    except LimitError as err:
        sys.stderr.write(str(err) + "\n")
        return err.code


def _update(args: list[str]) -> int:
    changes: dict[str, int] = {}
    rest = list(args)
    names = []
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-"):
            names.append(arg)
            continue
        flag, eq, value = arg.partition("=")
        if flag not in UPDATE_FLAGS:
            raise LimitError(f"unknown flag: {flag}\nSee 'docker update --help'.")
        if not eq:
            if not rest:
                raise LimitError(f"flag needs an argument: {flag}\nSee 'docker update --help'.")
            value = rest.pop(0)
        changes["--memory" if flag == "-m" else flag] = _flag_value(flag, value, "update")
    if not names:
        raise LimitError("\"docker update\" requires at least 1 argument.\nSee 'docker update "
                         "--help'.")
    if not changes:
        raise LimitError("you must provide one or more flags when using this command",
                         code=1)
    containers = load_containers()
    code = 0
    for name in names:
        found = next((c for c in containers.values() if c["Name"] == "/" + name.lstrip("/")
                      or c["Id"].startswith(name)), None)
        if found is None:
            sys.stderr.write(f"Error response from daemon: No such container: {name}\n")
            code = 1
            continue
        try:
            _apply(found["HostConfig"], changes, name)
        except LimitError as err:
            sys.stderr.write(str(err) + "\n")
            code = 1
            continue
        sys.stdout.write(name + "\n")
    save_containers(containers)
    return code


def _apply(config: dict[str, Any], changes: dict[str, int], name: str) -> None:
    prefix = f"Error response from daemon: Cannot update container {name}: "
    memory = changes.get("--memory", config.get("Memory") or 0)
    swap = changes.get("--memory-swap", config.get("MemorySwap") or 0)
    if "--memory" in changes and memory and memory < MEMORY_MIN:
        raise LimitError(prefix + "Minimum memory limit allowed is 6MB", 1)
    if memory and swap > 0 and memory > swap:
        raise LimitError(prefix + "Memory limit should be smaller than already set memoryswap "
                         "limit, update the memoryswap at the same time", 1)
    if "--cpus" in changes:
        _check_cpus(changes["--cpus"], "")
        config["NanoCpus"] = changes["--cpus"]
    if "--pids-limit" in changes:
        pids = changes["--pids-limit"]
        config["PidsLimit"] = pids if pids > 0 else None
    config["Memory"], config["MemorySwap"] = memory, swap
