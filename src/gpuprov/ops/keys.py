"""Repository signing keys, read on the controller.

Targets need neither curl nor gpg: the key is fetched (or read) here once per
run, dearmored by openpgp.dearmor, and written by the repository ops, so
check mode can compare it with the host's keyring byte for byte. Mirrors and
air-gapped sites give a URL of their own or a file on the controller.

A key is what every package of its repository is trusted by, so it is
fetched over https only, redirects included (plain http only where the
repository mapping says `insecure: true`: a mirror on a trusted network),
and, given the fingerprint its vendor publishes, a key that changed upstream
(or on the way) is refused instead of being installed on every host.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuprov.errors import GpuprovError
from gpuprov.ops.openpgp import fingerprints

FETCH_TIMEOUT = 20
MAX_KEY_BYTES = 1024 * 1024

_lock = threading.Lock()
# source -> key bytes, or the error: every host of a run asks for the same key,
# and a dead URL must cost one timeout, not one per host.
_cache: dict[tuple[str, bool], bytes | GpuprovError] = {}


class SigningKeyError(GpuprovError):
    """A signing key could not be read."""


def read_key(source: str, what: str, variable: str, insecure: bool = False) -> bytes:
    """The key at `source`: an https URL (http too when `insecure`), a file on
    the controller, or the armored key text itself. `what` and `variable`
    name it in errors."""
    source = source.strip()
    if source.startswith("-----BEGIN"):
        return source.encode()
    with _lock:
        cached = _cache.get((source, insecure))
        if cached is None:
            try:
                cached = _load(source, what, variable, insecure)
            except SigningKeyError as exc:
                cached = exc
            _cache[(source, insecure)] = cached
    if isinstance(cached, GpuprovError):
        raise cached
    return cached


def _hint(variable: str) -> str:
    return (f"set {variable} to a reachable URL, a key file on the controller, or the "
            "armored key text (mirrors and air-gapped sites)")


def _insecure_hint(variable: str) -> str:
    mapping = variable.split(".")[0]
    return (f"use an https:// URL for {variable}, or (a mirror on a network you trust) set "
            f"`insecure: true` in the {mapping} mapping to allow plain http")


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to https (any http(s) when insecure): a
    redirect must not downgrade the fetch to plain http."""

    def __init__(self, insecure: bool) -> None:
        self.insecure = insecure

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme != "https" and not (self.insecure and scheme == "http"):
            raise urllib.error.URLError(f"redirected to {newurl}, which is not https: refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _load(source: str, what: str, variable: str, insecure: bool) -> bytes:
    hint = _hint(variable)
    scheme = source.split(":", 1)[0].lower()
    if scheme == "http" and not insecure:
        raise SigningKeyError(f"the signing key of {what} would be fetched over plain http "
                              f"({source}): refused, anyone on the way could replace it",
                              _insecure_hint(variable))
    if scheme in ("https", "http"):
        opener = urllib.request.build_opener(_HttpsOnlyRedirects(insecure))
        try:
            with opener.open(source, timeout=FETCH_TIMEOUT) as resp:
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
    the key is out of reach. `what` and `variable` name it in errors.
    `insecure` allows plain http; `fingerprint` (normalized, see
    openpgp.normalize_fingerprint) is the primary key every key in the block
    must be."""

    source: str
    what: str
    variable: str
    insecure: bool = False
    fingerprint: str = ""

    def read(self) -> bytes:
        data = read_key(self.source, self.what, self.variable, self.insecure)
        if self.fingerprint:
            try:
                found = fingerprints(data)
            except ValueError as exc:
                raise self.unusable(f"is not an OpenPGP public key whose fingerprint "
                                    f"can be checked: {exc}") from exc
            wrong = [fp for fp in found if fp != self.fingerprint]
            if wrong:
                mapping = self.variable.split(".")[0]
                raise SigningKeyError(
                    f"the signing key of {self.what} from {self._where()} has fingerprint "
                    f"{', '.join(wrong)}, not the expected {self.fingerprint} "
                    f"({mapping}.key_fingerprint)",
                    "the key changed upstream or on the way: compare with the fingerprint its "
                    f"vendor publishes, then fix {self.variable} or {mapping}.key_fingerprint")
        return data

    def _where(self) -> str:
        source = self.source.strip()
        return "inline text" if source.startswith("-----BEGIN") else source

    def unusable(self, why: str) -> SigningKeyError:
        """The error for a key that was read but is no key an op can use."""
        return SigningKeyError(f"the signing key of {self.what} from {self._where()} {why}",
                               _hint(self.variable))


def clear_cache() -> None:
    """Forget fetched keys (tests; a long-lived controller process)."""
    with _lock:
        _cache.clear()
