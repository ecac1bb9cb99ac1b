# TEST DOUBLE repositories for gpuprov's test fleet. Never point real hosts at them.
"""Stand-in apt repositories (NVIDIA driver, container toolkit, Docker, CUDA) whose
binaries are test doubles.  See README.md."""

from tests.standin_repo.build import BuiltRepos, build_repos, ensure_repos, input_hash

__all__ = ["BuiltRepos", "build_repos", "ensure_repos", "input_hash"]
