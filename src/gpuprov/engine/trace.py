"""-vv and -vvv: each command a host's connector ran, and its facts scripts,
told to whoever shows them (the output layer's Progress), with the host's
secret values masked.

The connector is told nothing of the layers above: it calls the callable it
was given (Connector.trace); so does HostFacts. This module is that callable.
"""

from __future__ import annotations

from typing import Protocol

from gpuprov.command import mask_text
from gpuprov.connectors.base import Connector


class CommandSink(Protocol):
    """Who shows the commands (output/progress.py: Progress)."""

    def command_ran(self, host: str, command: str, exit_code: int | None, stdout: str,
                    stderr: str, round_trip: int) -> None: ...

    def facts_sent(self, host: str, script: str, output: str | None) -> None: ...


class HostTrace:
    """One host's trace: wired into its connector by trace_host()."""

    def __init__(self, host: str, connector: Connector, sink: CommandSink) -> None:
        self.host = host
        self.connector = connector
        self.sink = sink
        #: the host's known secret values (grow as plays learn them): never shown.
        #: A command's own secrets are masked already (Command.display()); its
        #: output and a facts script may still hold a value read from a file.
        self.secrets: set[str] = set()

    def command(self, display: str, exit_code: int | None, stdout: str, stderr: str) -> None:
        self.sink.command_ran(self.host, self._mask(display), exit_code, self._mask(stdout),
                              self._mask(stderr), self.connector.stats.round_trips)

    def facts(self, script: str, output: str | None) -> None:
        self.sink.facts_sent(self.host, self._mask(script),
                             None if output is None else self._mask(output))

    def _mask(self, text: str) -> str:
        return mask_text(text, self.secrets)


def trace_host(sink: CommandSink, host: str, connector: Connector) -> HostTrace:
    """Have `connector` tell `sink` of each command it runs."""
    trace = HostTrace(host, connector, sink)
    connector.trace = trace.command
    return trace
