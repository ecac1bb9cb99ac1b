"""`gpuprov run PATTERN -- COMMAND`: one ad-hoc command on many hosts, like
`ansible PATTERN -a COMMAND`.

Each host: connect, run the command once (as root with become, through the
connectors' sudo), close. Hosts run in parallel (forks) and the results
come back in the hosts' order, each as soon as it and the ones before it
are done. No play, no facts, and no run lock: an ad-hoc command may run
beside an `apply` on the same host (the lock is for gpuprov's own changes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gpuprov.command import Command, mask_text
from gpuprov.engine.connect import ConnectOptions, connector_for
from gpuprov.engine.executor import ConnectorFactory, internal_error
from gpuprov.errors import GpuprovError, UnreachableHost
from gpuprov.model.inventory import Host
from gpuprov.model.vars import build_host_vars


@dataclass(frozen=True)
class AdhocResult:
    """One host's answer; secrets masked. `rc` is None when nothing ran."""

    host: str
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    unreachable: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        """The command ran and failed, or gpuprov could not run it (not unreachable)."""
        return self.error is not None or (self.rc is not None and self.rc != 0)


def adhoc_command(argv: Sequence[str]) -> Command:
    """The command line for `argv` (what followed `--`): one argument is a
    shell line, run by `sh -c` (pipes, globs, variables work as typed); more
    are a program and its arguments, each quoted (nothing is re-parsed)."""
    if not argv:
        raise GpuprovError("no command given", hint="gpuprov run PATTERN -- COMMAND [ARGS...]")
    if len(argv) == 1:
        return Command("sh", "-c", argv[0])
    return Command(*argv)


def run_adhoc(hosts: Sequence[Host], command: Command, *, become: bool, forks: int,
              connect: ConnectOptions,
              connector_factory: ConnectorFactory = connector_for) -> Iterator[AdhocResult]:
    """Run `command` on every host; the results in the hosts' order."""

    def one(host: Host) -> AdhocResult:
        secrets = _secrets(host, connect)
        connector = connector_factory(host, connect)
        try:
            connector.connect()
            res = connector.run(command, sudo=become)
            return AdhocResult(host.name, res.exit_code, mask_text(res.stdout, secrets),
                               mask_text(res.stderr, secrets))
        except UnreachableHost as exc:
            return AdhocResult(host.name, unreachable=mask_text(str(exc), secrets))
        except GpuprovError as exc:
            return AdhocResult(host.name, error=mask_text(str(exc), secrets))
        except Exception as exc:
            return AdhocResult(host.name, error=mask_text(internal_error(exc), secrets))
        finally:
            connector.close()

    with ThreadPoolExecutor(max(1, min(forks, len(hosts) or 1))) as pool:
        yield from pool.map(one, hosts)


def _secrets(host: Host, connect: ConnectOptions) -> list[str]:
    """What no output about the host may show: its secret variables' values
    and the passwords given to gpuprov."""
    found = [connect.become_password or "", connect.ssh_password or ""]
    with contextlib.suppress(GpuprovError):   # what cannot be rendered cannot leak
        found += build_host_vars(host).secret_values()
    return [s for s in found if s]
