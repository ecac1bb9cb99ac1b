"""The `gpuprov` command line: click commands, one module per command family.

The top layer: it parses options, loads the model, runs the engine, renders
with output/ and turns results into exit codes. Nothing imports it.
"""

from gpuprov.cli.app import main

__all__ = ["main"]
