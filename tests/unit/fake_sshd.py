"""An in-process SSH server (paramiko) for the connector tests: runs each
command with `sh -c` in a work directory, and can drop connections on demand."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

DIE = "gpuprov-test-die-now"   # a command containing this makes the server drop the connection


def _quietly(func: Callable[..., None]) -> Callable[..., None]:
    """Server threads end silently when a test tears the connection down."""

    @functools.wraps(func)
    def wrapper(*args: object) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            func(*args)

    return wrapper


class _Handler(paramiko.ServerInterface):
    def __init__(self, server: FakeSshd, transport: paramiko.Transport) -> None:
        self.server = server
        self.transport = transport

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password" if self.server.password else "publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        self.server.auth_attempts.append((username, "password"))
        ok = self.server.password is not None and password == self.server.password
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.server.auth_attempts.append((username, key.get_fingerprint()))
        if key.asbytes() in self.server.authorized:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple, dest: tuple) -> int:
        if dest[0] != "127.0.0.1":  # tests only ever connect to 127.0.0.1
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self.server.forwards.append(dest)
        threading.Thread(target=self.server.forward, args=(self.transport, chanid, dest),
                         daemon=True).start()
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.server.commands.append(command.decode())
        threading.Thread(target=self.server.execute, args=(self.transport, channel,
                                                           command.decode()), daemon=True).start()
        return True


class FakeSshd:
    """A tiny sshd: publickey auth, exec via /bin/sh -c, direct-tcpip forwarding."""

    def __init__(self, workdir: Path, host_key: paramiko.PKey, authorized: list[paramiko.PKey],
                 port: int = 0) -> None:
        self.workdir = workdir
        self.host_key = host_key
        self.authorized = {k.asbytes() for k in authorized}
        self.commands: list[str] = []
        self.forwards: list[tuple] = []
        self.auth_attempts: list[tuple] = []
        self.accepted = 0
        #: a password that logs in too (None: keys only)
        self.password: str | None = None
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        self.channels: list[paramiko.Channel] = []
        self.procs: dict[paramiko.Channel, subprocess.Popen | None] = {}
        self.lock = threading.Lock()
        self.signals: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            self._watch_replies(transport)
            self.transports.append(transport)
            threading.Thread(target=self._serve, args=(transport,), daemon=True).start()

    @_quietly
    def _serve(self, transport: paramiko.Transport) -> None:
        # In its own thread: a client that hangs up mid-handshake (as on a
        # changed host key) must not stop the accept loop.
        transport.start_server(server=_Handler(self, transport))
        self._sessions(transport)

    def _watch_replies(self, transport: paramiko.Transport) -> None:
        # Like sshd, reply "exec ok" before the command's output: paramiko
        # sends that reply after check_channel_exec_request returns, so the
        # command thread waits until it has gone out.
        send = transport._send_user_message
        transport.exec_replied = {}

        def send_and_note(msg: paramiko.Message) -> None:
            send(msg)
            raw = msg.asbytes()
            if raw[:1] == bytes([99]):  # MSG_CHANNEL_SUCCESS
                chanid = int.from_bytes(raw[1:5], "big")
                transport.exec_replied.setdefault(chanid, threading.Event()).set()

        transport._send_user_message = send_and_note

        # paramiko servers ignore "signal" requests; handle them like sshd
        # (kill the command) so tests can see that the client sends them.
        table = dict(transport._channel_handler_table)
        handle_request = table[98]  # MSG_CHANNEL_REQUEST

        def request(chan: paramiko.Channel, msg: paramiko.Message) -> None:
            start = msg.packet.tell()
            if msg.get_text() == "signal":
                msg.get_boolean()
                self.signals.append(msg.get_text())
                with self.lock:  # sshd has always forked by now; we may not have
                    proc = self.procs.get(chan)
                    if proc is None:
                        self.procs[chan] = None
                    else:
                        os.killpg(proc.pid, getattr(signal, "SIG" + self.signals[-1]))
                return
            msg.packet.seek(start)
            handle_request(chan, msg)

        table[98] = request
        transport._channel_handler_table = table

    def _sessions(self, transport: paramiko.Transport) -> None:
        # Accept channels and keep them referenced: a collected Channel closes.
        while transport.is_active():
            chan = transport.accept(0.5)
            if chan is not None:
                self.channels.append(chan)

    @_quietly
    def execute(self, transport: paramiko.Transport, chan: paramiko.Channel, command: str) -> None:
        transport.exec_replied.setdefault(chan.remote_chanid, threading.Event()).wait(5)
        if DIE in command:
            chan.sendall(b"partial output\n")
            time.sleep(0.1)
            transport.sock.shutdown(socket.SHUT_RDWR)  # abrupt: no exit status, no close
            transport.close()
            return
        with self.lock:
            if chan in self.procs:  # signalled before it started
                chan.close()
                return
            proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=self.workdir,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
            self.procs[chan] = proc

        def pump_in() -> None:
            try:
                while data := chan.recv(65536):
                    proc.stdin.write(data)
            except (BrokenPipeError, OSError):
                pass
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()

        @_quietly
        def pump_err() -> None:
            while data := proc.stderr.read1(65536):
                chan.sendall_stderr(data)

        threads = [threading.Thread(target=pump_in, daemon=True),
                   threading.Thread(target=pump_err, daemon=True)]
        for thread in threads:
            thread.start()
        while data := proc.stdout.read1(65536):
            chan.sendall(data)
        threads[1].join()
        code = proc.wait()
        if code >= 0:  # killed by a signal: sshd sends exit-signal, paramiko ignores it
            chan.send_exit_status(code)
        chan.shutdown_write()
        chan.close()

    @_quietly
    def forward(self, transport: paramiko.Transport, chanid: int, dest: tuple) -> None:
        chan = None
        for _ in range(50):  # the channel object appears once the open is confirmed
            chan = transport._channels.get(chanid)
            if chan is not None:
                break
            time.sleep(0.01)
        assert chan is not None
        sock = socket.create_connection(("127.0.0.1", dest[1]))

        @_quietly
        def up() -> None:
            while data := chan.recv(65536):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

        threading.Thread(target=up, daemon=True).start()
        while data := sock.recv(65536):
            chan.sendall(data)
        chan.close()

    def kill_connections(self) -> None:
        for transport in self.transports:
            transport.close()

    def stop(self) -> None:
        self.listener.close()
        self.kill_connections()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens: connections are refused
    return port
