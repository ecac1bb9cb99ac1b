"""Repository signing keys on the controller (ops/keys.py, ops/openpgp.py):
https only unless the repository mapping says `insecure: true`, no redirect
to plain http, and an optional fingerprint pin computed from the key packet
(no gpg). Local servers on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import http.server
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuprov.engine.roleops import settle_blocked
from gpuprov.errors import GpuprovError
from gpuprov.facts.apt import AptKeyring, AptSources
from gpuprov.facts.base import FactView
from gpuprov.ops import keys
from gpuprov.ops.openpgp import dearmor, fingerprints, normalize_fingerprint
from gpuprov.ops.repositories import repository_key_options, signed_repository
from tests.unit.role_facts import ARMORED_KEY, REAL_FPR, REAL_KEY
from tests.unit.role_harness import DEBIAN_12, RHEL_9

OTHER_FPR = "EB693B3035CD5710E231E123A4B469963BF863CC"
URL = "https://repo.example/stable"
KEYRING = "/usr/share/keyrings/example.gpg"


@pytest.fixture(autouse=True)
def fresh_key_cache() -> Iterator[None]:
    keys.clear_cache()
    yield
    keys.clear_cache()


# -- fingerprints ---------------------------------------------------------------

def test_fingerprint_of_a_real_key_matches_gpg() -> None:
    assert fingerprints(REAL_KEY) == [REAL_FPR]
    assert fingerprints(dearmor(REAL_KEY)) == [REAL_FPR]   # binary keyring too


def test_fingerprint_is_sha1_over_the_packet_in_either_header_format() -> None:
    body = b"\x04\x00\x00\x00\x01\x16" + bytes(range(40))   # v4, created, algorithm, key
    want = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    old_format = bytes([0x98, len(body)]) + body               # tag 6, one-byte length
    new_format = bytes([0xC6, len(body)]) + body               # tag 6, new header
    user_id = bytes([0xCD, 3]) + b"abc"                        # tag 13: not a key
    assert fingerprints(old_format + user_id + new_format) == [want, want]


def test_keys_whose_fingerprint_cannot_be_computed() -> None:
    with pytest.raises(ValueError, match="version 5 primary key"):
        fingerprints(bytes([0xC6, 3]) + b"\x05ab")
    with pytest.raises(ValueError, match="truncated"):
        fingerprints(bytes([0xC6, 30]) + b"\x04ab")
    with pytest.raises(ValueError, match="no public key packet"):
        fingerprints(bytes([0xCD, 3]) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        fingerprints(ARMORED_KEY)   # the role tests' fake key: armor only, no real packet


def test_fingerprints_as_people_write_them() -> None:
    spaced = "9082 5A80 5F6E 983F 87DF  5764 D1AB 65F9 4A15 1A78"
    assert normalize_fingerprint(spaced.lower()) == REAL_FPR
    assert normalize_fingerprint("0x" + REAL_FPR) == REAL_FPR
    for short in ("3bf863cc", "A4B469963BF863CC", REAL_FPR + "00"):
        with pytest.raises(ValueError, match="a short key id is not enough"):
            normalize_fingerprint(short)


# -- the fingerprint pin in a repository ------------------------------------------

def deb_repo(key: str, **kw: object):
    return signed_repository(DEBIAN_12, "example", URL, key=key, variable="example_repo.key",
                             keyring=KEYRING, what="the example repository", **kw)


FRESH = FactView({AptSources(): {}, AptKeyring(KEYRING): None})


def test_matching_fingerprint_lets_the_key_through(tmp_path: Path) -> None:
    (tmp_path / "k.asc").write_text(REAL_KEY)
    op = deb_repo(str(tmp_path / "k.asc"), key_fingerprint=REAL_FPR.lower())
    key_change, _ = op.plan(FRESH)
    assert key_change.blocked is None and key_change.steps[0].stdin == dearmor(REAL_KEY)


@pytest.mark.parametrize("os", [DEBIAN_12, RHEL_9], ids=["debian", "rhel"])
def test_fingerprint_mismatch_is_blocked_naming_both(tmp_path: Path, os) -> None:
    (tmp_path / "k.asc").write_text(REAL_KEY)
    op = signed_repository(os, "example", URL, key=str(tmp_path / "k.asc"),
                           variable="example_repo.key", what="the example repository",
                           key_fingerprint=OTHER_FPR)
    blocked = op.plan(FRESH if os is DEBIAN_12 else FactView({}))[0]
    assert blocked.resource == "signing key of the example repository" and not blocked.steps
    assert blocked.blocked.startswith(
        f"the signing key of the example repository from {tmp_path / 'k.asc'} has fingerprint "
        f"{REAL_FPR}, not the expected {OTHER_FPR} (example_repo.key_fingerprint)\n"
        "  hint: the key changed upstream or on the way")
    # like an unreadable key: unknown in check mode, the task's failure in apply
    assert settle_blocked(op.plan(FRESH if os is DEBIAN_12 else FactView({})), check=False)


def test_a_key_without_a_computable_fingerprint_is_blocked_when_pinned(tmp_path: Path) -> None:
    blocked, _ = deb_repo(ARMORED_KEY, key_fingerprint=REAL_FPR).plan(FRESH)
    assert "from inline text is not an OpenPGP public key whose fingerprint" in blocked.blocked
    unpinned, _ = deb_repo(ARMORED_KEY).plan(FRESH)
    assert unpinned.blocked is None   # no pin: the key is not parsed beyond its armor


def test_a_bad_fingerprint_or_insecure_value_is_refused_when_the_op_is_built() -> None:
    with pytest.raises(GpuprovError, match="example_repo.key_fingerprint: '3bf863cc'"):
        deb_repo(ARMORED_KEY, key_fingerprint="3bf863cc")
    assert repository_key_options({"url": "", "key": ""}) == {
        "insecure": False, "key_fingerprint": ""}
    assert repository_key_options({"insecure": True, "key_fingerprint": REAL_FPR.lower()}) == {
        "insecure": True, "key_fingerprint": REAL_FPR}
    with pytest.raises(ValueError, match="insecure must be true or false, not 'yes'"):
        repository_key_options({"insecure": "yes"})
    with pytest.raises(ValueError, match="key_fingerprint: 'D42D0685' is not"):
        repository_key_options({"key_fingerprint": "D42D0685"})


# -- https only -------------------------------------------------------------------

class KeyServer:
    """An http(s) server on 127.0.0.1: /key serves REAL_KEY, /to?<url> redirects."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                requests.append(self.path)
                if self.path.startswith("/to?"):
                    self.send_response(302)
                    self.send_header("Location", self.path[4:])
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(REAL_KEY.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def plain() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.close()


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyServer]:
    """An https server with a self-signed certificate the client trusts."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no openssl to make a test certificate: {exc}")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = KeyServer(context)
    yield server
    server.close()


def test_plain_http_is_refused_with_the_insecure_hint(plain: KeyServer) -> None:
    with pytest.raises(keys.SigningKeyError) as info:
        keys.read_key(f"{plain.url}/key", "the example repository", "example_repo.key")
    assert "would be fetched over plain http" in info.value.message
    assert "`insecure: true` in the example_repo mapping" in (info.value.hint or "")
    assert plain.requests == []   # refused before any byte went out


def test_insecure_allows_plain_http(plain: KeyServer) -> None:
    data = keys.read_key(f"{plain.url}/key", "the example repository", "example_repo.key",
                         insecure=True)
    assert data == REAL_KEY.encode()


def test_http_refusal_reaches_the_op_as_a_blocked_change(plain: KeyServer) -> None:
    blocked, _ = deb_repo(f"{plain.url}/key").plan(FRESH)
    assert "over plain http" in blocked.blocked and plain.requests == []
    key_change, _ = deb_repo(f"{plain.url}/key", insecure=True,
                             key_fingerprint=REAL_FPR).plan(FRESH)
    assert key_change.blocked is None


def test_https_is_fetched_and_pinned(tls: KeyServer) -> None:
    key_change, _ = deb_repo(f"{tls.url}/key", key_fingerprint=REAL_FPR).plan(FRESH)
    assert key_change.blocked is None and tls.requests == ["/key"]


def test_redirect_from_https_to_http_is_refused(tls: KeyServer, plain: KeyServer) -> None:
    with pytest.raises(keys.SigningKeyError, match="which is not https: refused"):
        keys.read_key(f"{tls.url}/to?{plain.url}/key", "the example repository",
                      "example_repo.key")
    assert plain.requests == []
    # https -> https is fine; with insecure, http is allowed after a redirect too
    assert keys.read_key(f"{tls.url}/to?{tls.url}/key", "x", "x.key") == REAL_KEY.encode()
    assert keys.read_key(f"{tls.url}/to?{plain.url}/key", "x", "x.key",
                         insecure=True) == REAL_KEY.encode()


def test_redirect_handler_refuses_any_non_https_target() -> None:
    handler = keys._HttpsOnlyRedirects(insecure=False)
    request = urllib.request.Request("https://a.example/key")
    for target in ("http://b.example/key", "ftp://b.example/key", "file:///etc/passwd"):
        with pytest.raises(urllib.error.URLError, match="not https"):
            handler.redirect_request(request, None, 302, "Found", {}, target)
    assert handler.redirect_request(request, None, 302, "Found", {}, "https://b.example/k")
    with pytest.raises(urllib.error.URLError):
        keys._HttpsOnlyRedirects(insecure=True).redirect_request(
            request, None, 302, "Found", {}, "file:///etc/passwd")
