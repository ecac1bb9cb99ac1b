"""Wheels repacked from the distributions installed in the running
interpreter, so a test can run a literal `pip install .` in a fresh venv with
`PIP_NO_INDEX=1 PIP_FIND_LINKS=<wheelhouse>`: no network or index needed, and
the same versions the rest of the suite runs with. The builder is gpuprov's
own (engine/wheelhouse.py, what `gpuprov pull-setup` copies to hosts)."""

from gpuprov.engine.wheelhouse import build, closure, repack, requirements

__all__ = ["build", "closure", "repack", "requirements"]
