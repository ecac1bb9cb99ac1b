"""Repository signing keys, read on the controller.

Targets need neither curl nor gpg: the key is fetched (or read) here once per
run, dearmored by apt_repos.dearmor, and written by the repository ops, so
check mode can compare it with the host's keyring byte for byte. Mirrors and
air-gapped sites give a URL of their own or a file on the controller.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gpuprov.errors import GpuprovError

FETCH_TIMEOUT = 20
MAX_KEY_BYTES = 1024 * 1024

_lock = threading.Lock()
# source -> key bytes, or the error: every host of a run asks for the same key,
# and a dead URL must cost one timeout, not one per host.
_cache: dict[str, bytes | GpuprovError] = {}


class SigningKeyError(GpuprovError):
    """A signing key could not be read."""


def read_key(source: str, what: str, variable: str) -> bytes:
    """The key at `source`: an http(s) URL, a file on the controller, or the
    armored key text itself. `what` and `variable` name it in errors."""
    source = source.strip()
    if source.startswith("-----BEGIN"):
        return source.encode()
    with _lock:
        cached = _cache.get(source)
        if cached is None:
            try:
                cached = _load(source, what, variable)
            except SigningKeyError as exc:
                cached = exc
            _cache[source] = cached
    if isinstance(cached, GpuprovError):
        raise cached
    return cached


def _hint(variable: str) -> str:
    return (f"set {variable} to a reachable URL, a key file on the controller, or the "
            "armored key text (mirrors and air-gapped sites)")


def _load(source: str, what: str, variable: str) -> bytes:
    hint = _hint(variable)
    if source.startswith(("https://", "http://")):
        try:
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT) as resp:  # noqa: S310
                data = resp.read(MAX_KEY_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SigningKeyError(f"cannot fetch the signing key of {what} from {source}: {reason}",
                            hint) from exc
    else:
        path = Path(source).expanduser()
        try:
            data = path.read_bytes()[:MAX_KEY_BYTES + 1]
        except OSError as exc:
            raise SigningKeyError(f"cannot read the signing key of {what} from {path}: "
                            f"{exc.strerror or exc}", hint) from exc
    if len(data) > MAX_KEY_BYTES or not data.strip():
        raise SigningKeyError(f"the signing key of {what} from {source} is "
                        f"{'empty' if not data.strip() else 'too large'}: not a key", hint)
    return data


@dataclass(frozen=True)
class SigningKey:
    """A repository's signing key, read (read_key: once per run) only when an
    op plans with it, so the op can be built, and its facts gathered, while
    the key is out of reach. `what` and `variable` name it in errors."""

    source: str
    what: str
    variable: str

    def read(self) -> bytes:
        return read_key(self.source, self.what, self.variable)

    def unusable(self, why: str) -> SigningKeyError:
        """The error for a key that was read but is no key an op can use."""
        source = self.source.strip()
        where = "inline text" if source.startswith("-----BEGIN") else source
        return SigningKeyError(f"the signing key of {self.what} from {where} {why}",
                               _hint(self.variable))


def clear_cache() -> None:
    """Forget fetched keys (tests; a long-lived controller process)."""
    with _lock:
        _cache.clear()
