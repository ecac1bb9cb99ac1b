"""Ship the top-level roles/ and playbooks/ inside the package (gpuprov/bundled/).

They stay at the repo's top level for people to read and fork; a wheel gets a
copy, so `pip install .` works from any directory. Everything else is in
pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
BUNDLED = ("roles", "playbooks")


class BuildPyWithBundled(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "gpuprov" / "bundled"
        for name in BUNDLED:
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(HERE / name, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithBundled})
