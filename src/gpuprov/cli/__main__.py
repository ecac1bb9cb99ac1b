"""`python -m gpuprov.cli`: the same entry point as the `gpuprov` script."""

import os

from gpuprov.cli.app import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
main()
