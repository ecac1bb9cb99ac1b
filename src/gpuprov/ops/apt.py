"""apt operations: packages, holds, repositories (with their keys), pins, cache.

The names roles call (`from gpuprov.ops import apt`); packages and the cache
live in ops/apt_packages.py, repositories and pins in ops/apt_repos.py.

How the apt cache is kept fresh (no blind `apt-get update` on every run):
- apt_repository(): a Change that writes a source or its key ends with an
  `apt-get update` of THAT source only (Dir::Etc::sourcelist=<file>), so the
  packages op after it sees the new candidates when the engine re-gathers
  facts, and a converged host never runs an update.
- packages(): when a package to install has no candidate in the local cache
  (repo not configured yet, or a fresh cloud image with empty lists), check
  mode reports the change as unknown ("depends on ..."), and apply prepends a
  full `apt-get update` to the install, so a half-done earlier run heals.
- apt_update(cache_valid_time): the explicit, age-based refresh.
Every apt/dpkg call waits for the lock (unattended-upgrades on fresh VMs)
for `lock_timeout` seconds instead of failing at once, gives up on a silent
repository after `net_timeout` seconds, and says who held the lock or which
repository failed (ops/apt_commands.py).
"""

from __future__ import annotations

from gpuprov.ops.apt_commands import LOCK_TIMEOUT, NET_TIMEOUT, apt_get, apt_mark, apt_step
from gpuprov.ops.apt_packages import APT_CACHE_FACTS, AptPackages, AptUpdate
from gpuprov.ops.apt_repos import AptPin, AptRepository
from gpuprov.ops.openpgp import dearmor

#: packages(names, state=, held=, ...): see AptPackages
packages = AptPackages
#: apt_update(cache_valid_time=3600): see AptUpdate
apt_update = AptUpdate
#: apt_repository(name, url, suite, components, key=, keyring=, ...): see AptRepository
apt_repository = AptRepository
#: apt_pin(name, package, pin, priority=1001): see AptPin
apt_pin = AptPin

__all__ = ["APT_CACHE_FACTS", "LOCK_TIMEOUT", "NET_TIMEOUT", "AptPackages", "AptPin",
           "AptRepository", "AptUpdate", "apt_get", "apt_mark", "apt_pin", "apt_repository",
           "apt_step", "apt_update", "dearmor", "packages"]
