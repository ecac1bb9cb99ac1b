"""A dpkg run that was killed mid-way (the host rebooted, the connection or the
controller died during an install) is finished before apt touches packages
again: until `dpkg --configure -a` has run, every apt-get install or remove
refuses with "dpkg was interrupted". The ops that install or remove Debian
packages read DpkgInterrupted and put this repair first; check mode and
drift-check report it, since the host's packages are not as dpkg last meant."""

from __future__ import annotations

from gpuprov.command import Command
from gpuprov.facts.apt import DpkgInterrupted
from gpuprov.facts.base import FactView
from gpuprov.ops.base import Change, Step

#: finishes every half-done unpack and configure; keeps the config files on the host
CONFIGURE_PENDING = Command("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--configure", "-a",
                           "--force-confdef", "--force-confold")


def finish_interrupted_dpkg(facts: FactView) -> list[Change]:
    """The repair, when the host's last dpkg run never finished; else nothing."""
    if not facts[DpkgInterrupted()]:
        return []
    return [Change("dpkg", "repair",
                   "finish the interrupted dpkg run (dpkg --configure -a): apt-get refuses "
                   "to install or remove anything until it has run",
                   steps=[Step(CONFIGURE_PENDING)],
                   # what it configures can drop files and start services: all facts stale
                   invalidates=None)]
