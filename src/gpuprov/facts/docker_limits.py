"""A container's resource limits as `docker inspect` reports them (HostConfig
Memory, NanoCpus, ShmSize, PidsLimit), and docker's own spelling of them on
the `docker run` command line: --memory and --shm-size sizes ("16g" is
17179869184 bytes: docker's units are binary), --cpus (1.5 is 1500000000
NanoCpus), --pids-limit.

The parsers accept what docker's CLI accepts and compute the number it
computes, so a value checked here is the number `docker inspect` shows later:
the comparison of the declared limits with the running container's is exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

# docker's go-units RAMInBytes: "16g", "16G", "16gb", "16GiB", "1.5g", "512 m", "1024"
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
NANO = 10 ** 9
#: what docker gives a container's /dev/shm without --shm-size (unless the
#: daemon's default-shm-size says otherwise)
DOCKER_SHM_DEFAULT = 64 << 20
#: docker refuses a smaller --memory ("Minimum memory limit allowed is 6MB")
DOCKER_MEMORY_MIN = 6 << 20


def parse_size(value: Any) -> int:
    """Bytes of a docker size ("16g", 1073741824); ValueError if docker would refuse it."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size: {value!r}")
    text = str(value).strip()
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"invalid size: {text!r}")
    # as docker: a float times the unit, truncated ("1.5g" is 1610612736)
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


def format_size(size: int) -> str:
    """The shortest exact docker spelling: 17179869184 -> "16g", 1000 -> "1000b"."""
    for unit in "ptgmk":
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}b"


def parse_cpus(value: Any) -> int:
    """NanoCpus of a docker --cpus value ("1.5", 2); ValueError if docker would refuse it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    text = str(value).strip()
    try:
        cpus = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not cpus.is_finite():
        raise ValueError(f"{text!r} is not a number")
    nano = cpus * NANO
    if nano != nano.to_integral_value():
        raise ValueError(f"{text!r} is too precise (docker counts in billionths of a CPU)")
    return int(nano)


def format_cpus(nano: int) -> str:
    """1500000000 -> "1.5", 2000000000 -> "2"."""
    text = format(Decimal(nano) / NANO, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class ContainerLimits:
    """Memory and shm in bytes, CPUs in billionths, pids: 0 is no limit (docker's
    0, and its -1 or null for pids). None: not known, or not compared (no
    jupyter_shm_size declared leaves /dev/shm to the daemon's default)."""

    memory: int | None = 0
    nano_cpus: int | None = 0
    shm_size: int | None = None
    pids_limit: int | None = 0

    @classmethod
    def from_inspect(cls, data: Any) -> ContainerLimits | None:
        """From the "limits" object of the inspect template (HostConfig's fields)."""
        if not isinstance(data, dict):
            return None

        def number(key: str) -> int | None:
            value = data.get(key)
            if value is None or isinstance(value, bool):
                return None
            return max(int(value), 0)   # PidsLimit -1: no limit, as 0

        pids = data.get("pids_limit")
        return cls(number("memory"), number("nano_cpus"), number("shm_size"),
                   0 if pids is None else number("pids_limit"))

    def shown(self) -> dict[str, str]:
        """{"memory": "16g", ...} of the known fields, as people (and docker) spell them."""
        return {_WORDS[f.name]: _show(f.name, value) for f in fields(self)
                if (value := getattr(self, f.name)) is not None}

    def drift(self, running: ContainerLimits | None) -> list[str]:
        """"memory 8g, declared 16g" for each declared limit the running container differs in."""
        if running is None:
            return []
        return [f"{_WORDS[f.name]} {_show(f.name, have)}, declared {_show(f.name, want)}"
                for f in fields(self)
                if (want := getattr(self, f.name)) is not None
                and (have := getattr(running, f.name)) is not None and have != want]

    def only(self, declared: ContainerLimits) -> ContainerLimits:
        """These limits, restricted to the fields `declared` compares."""
        return ContainerLimits(*(getattr(self, f.name) if getattr(declared, f.name) is not None
                                 else None for f in fields(self)))


_WORDS = {"memory": "memory", "nano_cpus": "cpus", "shm_size": "shm-size",
          "pids_limit": "pids-limit"}


def _show(field: str, value: int) -> str:
    if field == "shm_size":
        return format_size(value)   # 0 is no limit for the others only
    if not value:
        return "unlimited"
    return {"memory": format_size, "nano_cpus": format_cpus}.get(field, str)(value)
