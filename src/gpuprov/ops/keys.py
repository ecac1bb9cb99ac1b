"""Repository signing keys, read on the controller.

Targets need neither curl nor gpg: the key is fetched (or read) here once per
run, dearmored by apt.dearmor, and written by the repository ops, so check
mode can compare it with the host's keyring byte for byte. Mirrors and
air-gapped sites give a URL of their own or a file on the controller.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path

from gpuprov.errors import GpuprovError
from gpuprov.ops.base import Unknown

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


def _load(source: str, what: str, variable: str) -> bytes:
    hint = (f"set {variable} to a reachable URL, a key file on the controller, or the "
            "armored key text (mirrors and air-gapped sites)")
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


def key_or_unknown(source: str, what: str, variable: str, check: bool
                   ) -> tuple[bytes | None, Unknown | None]:
    """read_key for roles: in check mode an unreadable key is an "unknown"
    (drift-check on an offline controller still reports everything else);
    in apply mode it is the error."""
    try:
        return read_key(source, what, variable), None
    except SigningKeyError as exc:
        if not check:
            raise
        return None, Unknown(f"signing key of {what}", f"{exc}; apply would stop here")


def clear_cache() -> None:
    """Forget fetched keys (tests; a long-lived controller process)."""
    with _lock:
        _cache.clear()
