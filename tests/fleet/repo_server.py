"""Serve the stand-in apt repositories over HTTP on the fleet bridge only.

Fault modes (issue 15), switched per test with `RepoServer.faulty(mode)`:
- "500": every request answers 500 Internal Server Error;
- "hang": every request is accepted and never answered (until the mode ends);
- "truncated": Packages index files are served cut in half (a mirror caught
  mid-sync): the HTTP answer is whole, the content shorter than Release says.
"""

from __future__ import annotations

import functools
import io
import posixpath
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULT_MODES = ("500", "hang", "truncated")
#: the longest a "hang" keeps one request waiting (the server shutting down ends it too)
HANG_LIMIT = 600.0


class _FaultyServer(ThreadingHTTPServer):
    fault: str | None = None
    stopping = False


class _QuietHandler(SimpleHTTPRequestHandler):
    server: _FaultyServer

    def send_head(self):  # type: ignore[no-untyped-def]
        # The build dir also holds the signing keys' GNUPGHOME: never served.
        if self.path.lstrip("/").startswith("gnupg"):
            self.send_error(404)
            return None
        fault = self.server.fault
        if fault == "500":
            self.send_error(500)
            return None
        if fault == "hang":
            deadline = time.monotonic() + HANG_LIMIT
            while (self.server.fault == "hang" and not self.server.stopping
                   and time.monotonic() < deadline):
                time.sleep(0.1)
            self.close_connection = True
            return None
        if fault == "truncated" and posixpath.basename(self.path).startswith("Packages"):
            return self._truncated()
        return super().send_head()

    def _truncated(self) -> Any:
        path = self.translate_path(self.path)
        try:
            data = Path(path).read_bytes()
        except OSError:
            self.send_error(404)
            return None
        half = data[:len(data) // 2]
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(len(half)))
        self.end_headers()
        return io.BytesIO(half)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


class RepoServer:
    def __init__(self, directory: Path, address: str, port: int = 0) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self._server = _FaultyServer((address, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fleet-repo-server")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def fault(self) -> str | None:
        return self._server.fault

    @contextmanager
    def faulty(self, mode: str) -> Iterator[None]:
        """Serve with fault `mode` (see FAULT_MODES) inside the block, healthy after it."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown repo fault {mode!r}; one of {FAULT_MODES}")
        self._server.fault = mode
        try:
            yield
        finally:
            self._server.fault = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.stopping = True
        self._server.shutdown()
        self._server.server_close()
