"""Host health for `gpuprov status`: uptime and load, the record the last
apply left, whether a local HTTP service answers, a value a managed script
declares. Each is read without root, from the kernel's own files or one
small probe.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from gpuprov.command import Command
from gpuprov.facts.base import Fact, FactError

#: written by `gpuprov apply` at the end of a run without failures (0644: it
#: holds no secret); a record of what happened, never desired state
LAST_APPLY_FILE = "/var/lib/gpuprov/last-apply.json"
#: written by `gpuprov pull` on the host after every pull run (0644), where pull
#: mode is set up (`gpuprov pull-setup`): absent elsewhere
LAST_PULL_FILE = "/var/lib/gpuprov/pull/last.json"


@dataclass(frozen=True)
class LoadInfo:
    uptime_s: float
    load: tuple[float, float, float]   # 1, 5 and 15 minute load averages


@dataclass(frozen=True)
class HostLoad(Fact[LoadInfo]):
    """/proc/uptime and /proc/loadavg in one cat: the first line is one, the
    second the other (their formats tell them apart too)."""

    def command(self) -> Command:
        return Command("cat", "/proc/uptime", "/proc/loadavg")

    def process(self, output: str, exit_code: int) -> LoadInfo:
        lines = output.splitlines()
        try:
            uptime = float(lines[0].split()[0])
            load = lines[1].split()
            return LoadInfo(uptime, (float(load[0]), float(load[1]), float(load[2])))
        except (IndexError, ValueError) as exc:
            raise FactError(f"/proc/uptime and /proc/loadavg unreadable: {output[:120]!r}"
                            ) from exc


@dataclass(frozen=True)
class LastApply(Fact["dict[str, Any] | None"]):
    """The last-apply record, None where no apply has finished cleanly (or the
    file is not the JSON object gpuprov writes)."""

    path: str = LAST_APPLY_FILE

    def command(self) -> Command:
        return Command("cat", self.path)

    def process(self, output: str, exit_code: int) -> dict[str, Any] | None:
        if exit_code != 0 or not output.strip():
            return None
        try:
            data = json.loads(output)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class LastPull(LastApply):
    """The record of the last `gpuprov pull` (pull mode); None where pull mode
    is off (no file) or the file is not a JSON object."""

    path: str = LAST_PULL_FILE


# ---------------------------------------------------------------- HTTP probe

# Python on the host only where there is no curl; never follows a redirect
# (a login redirect is the answer) and accepts the service's own certificate.
_PY_PROBE = """\
import ssl, sys, urllib.error, urllib.request
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ctx))
try:
    print("http=%d" % opener.open(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as exc:
    print("http=%d" % exc.code)
except Exception as exc:
    print("error=%s" % exc)
"""

_URL = re.compile(r"^(?P<scheme>https?)://(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)"
                  r":(?P<port>\d+)(?P<path>/[A-Za-z0-9/._-]*)$")


@dataclass(frozen=True)
class HttpProbe:
    status: int | None    # the HTTP status code; None: no HTTP answer
    detail: str | None    # why there is none (refused, timed out, no tool)


@dataclass(frozen=True)
class HttpStatus(Fact[HttpProbe]):
    """The status code of a GET of `url` from the host itself, without
    credentials and without following redirects: curl where there is one,
    else python3, else bash's /dev/tcp (plain HTTP only)."""

    url: str

    def __post_init__(self) -> None:
        if not _URL.match(self.url):
            raise ValueError(f"not a http(s)://host:port/path URL: {self.url!r}")

    def command(self) -> Command:
        match = _URL.match(self.url)
        assert match is not None
        url = shlex.quote(self.url)
        host, port, path = match["host"].strip("[]"), match["port"], match["path"]
        tcp = ("exec 3<>/dev/tcp/$1/$2 && printf 'GET %s HTTP/1.0\\r\\nHost: %s:%s\\r\\n\\r\\n' "
               "\"$3\" \"$1\" \"$2\" >&3 && head -n 1 <&3")
        bash = ("" if match["scheme"] == "http" else "false ") + \
            f"bash -c {shlex.quote(tcp)} _ {shlex.quote(host)} {port} {shlex.quote(path)}"
        return Command.script(
            "if command -v curl >/dev/null 2>&1; then\n"
            f"  curl -s -k -o /dev/null --max-time 5 -w 'http=%{{http_code}}\\n' {url}; "
            "echo \"curl=$?\"\n"
            "elif command -v python3 >/dev/null 2>&1; then\n"
            f"  python3 -c {shlex.quote(_PY_PROBE)} {url}\n"
            "elif command -v bash >/dev/null 2>&1; then\n"
            "  t=; command -v timeout >/dev/null 2>&1 && t='timeout 5'\n"
            f"  $t {bash} || echo 'error=no HTTP answer (bash /dev/tcp)'\n"
            "else echo 'error=no curl, python3 or bash on the host to ask with'; fi")

    def process(self, output: str, exit_code: int) -> HttpProbe:
        values: dict[str, str] = {}
        for line in output.splitlines():
            if line.startswith("HTTP/"):
                values["http"] = line.split()[1] if len(line.split()) > 1 else ""
            else:
                key, sep, value = line.partition("=")
                if sep:
                    values[key.strip()] = value.strip()
        code = values.get("http", "")
        if code.isdigit() and int(code) > 0:
            return HttpProbe(int(code), None)
        if "curl" in values:
            return HttpProbe(None, _CURL_ERRORS.get(values["curl"],
                                                    f"no HTTP answer (curl exit {values['curl']})"))
        return HttpProbe(None, values.get("error") or "no HTTP answer")


#: curl's exit codes a probe of a local port meets, in a person's words
_CURL_ERRORS = {"7": "connection refused", "28": "timed out after 5 s",
                "52": "empty reply (not HTTP?)", "35": "TLS handshake failed",
                "56": "connection reset"}


# ---------------------------------------------------------------- a script's value

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ScriptVariable(Fact["str | None"]):
    """The value of a `NAME=value` line a managed script declares (e.g. the
    spec the jupyter role's start script runs its container from); None where
    the script or the line is missing. Read with sed, no root: such scripts
    are 0755."""

    path: str
    name: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"not a shell variable name: {self.name!r}")

    def command(self) -> Command:
        return Command("sed", "-n", f"s/^{self.name}=//p", self.path)

    def process(self, output: str, exit_code: int) -> str | None:
        lines = output.strip().splitlines()
        if exit_code != 0 or not lines:
            return None
        value = lines[0].strip()
        try:   # the role quotes it like the shell does ('...' where needed)
            words = shlex.split(value)
        except ValueError:
            return value or None
        return words[0] if len(words) == 1 else (value or None)
