"""The last-apply record: what `gpuprov status` says about the last apply that
left a host without failures (when, which gpuprov, which playbook, how many
GPUs it saw). /var/lib/gpuprov/last-apply.json, root's, 0644: it holds no
secret. A record of what happened, not desired state: no role declares it,
so drift-check never compares it, and check mode never writes it.

It is written by the host's run lock as the lock is let go (HostLock.release
runs it, under the lock, with no round trip of its own), through the ops
layer's atomic write: a temp file beside the target, renamed over it. The
GPU count comes from the run's own facts when it asked nvidia-smi, else the
host counts its GPUs as it writes (null where it has none to count).
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Mapping
from typing import Any

from gpuprov import __version__
from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact
from gpuprov.facts.health import LAST_APPLY_FILE
from gpuprov.facts.nvidia import LoadedDriver, NvidiaSmi
from gpuprov.ops.atomic import temp_file_filled, temp_file_installed

#: overrides LAST_APPLY_FILE (unit tests: a temp dir, "{host}" the inventory host's
#: name), as GPUPROV_LOCK_PATH does the run lock's: their hosts are all this machine
RECORD_PATH_ENV = "GPUPROV_LAST_APPLY_PATH"

#: the host's own count where the run did not ask: digits, else JSON null
_COUNT = ("c=$(nvidia-smi --query-gpu=count --format=csv,noheader 2>/dev/null | head -n 1); "
          "case $c in ''|*[!0-9]*) c=null ;; esac")


def gpu_count(facts: Mapping[Fact[Any], Any]) -> int | None:
    """The GPUs nvidia-smi listed in this run; None when it was not asked or failed."""
    smi = facts.get(NvidiaSmi())
    if isinstance(smi, LoadedDriver) and smi.state == "ok":
        return len(smi.gpus)
    return None


def record(playbook: str | None, count: int | None, now: float | None = None) -> dict[str, Any]:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    return {"time": when, "version": __version__, "playbook": playbook, "gpu_count": count}


def record_path(host: str) -> str:
    return (os.environ.get(RECORD_PATH_ENV) or LAST_APPLY_FILE).replace("{host}", host)


def record_script(host: str, playbook: str | None, facts: Mapping[Fact[Any], Any],
                  now: float | None = None) -> str:
    """sh that writes the record of `host` atomically (root:root 0644)."""
    path = record_path(host)
    count = gpu_count(facts)
    data = record(playbook, count, now)
    head = json.dumps({k: v for k, v in data.items() if k != "gpu_count"})[:-1]
    if count is not None:
        fill = Command("printf", "%s\\n", json.dumps(data)).shell()
    else:   # counted on the host, as the record is written
        fill = ("{ " + _COUNT + "; printf '%s, \"gpu_count\": %s}\\n' "
                + Command(head).shell() + ' "$c"; }')
    write = Command(*temp_file_filled(path, [Raw(fill + ' >"$t"')], "root", "root", "0644"),
                    *temp_file_installed(path))
    return Command.join([Command("mkdir", "-p", posixpath.dirname(path)), write]).shell() + "\n"
