"""sshd_hardening: key-only SSH, no root login, strong crypto, never a lockout.

Checklist, per host:
1. one drop-in that sorts first in sshd_config.d, every setting from a
   variable; crypto lists cut to what this host's OpenSSH knows;
2. sshd_config reads that directory before its own settings (Include first);
3. an ed25519 host key, an RSA host key of sshd_rsa_host_key_bits, no
   ECDSA/DSA offered; no weak group-exchange moduli;
4. no other line wins over the drop-in (a file read before it, a Match
   block for the operator's login), and `sshd -T` shows every setting in
   effect: a conflict fails the task naming its file:line, or with
   sshd_conflicts: comment is commented out in the same armed change;
5. all of it applied the lockout-safe way (config.py): preflight
   (lockout.py), saved files + armed revert (gpuprov.ops.armed), sshd -t,
   reload, a new login + sudo, keep.
"""

from gpuprov.command import Command
from gpuprov.facts.files import FileState

from .config import CONFLICT_CHOICES, SshdConfig, SshdFile, include_first, sshd_state

SSHD_CONFIG = "/etc/ssh/sshd_config"
INCLUDE = "Include /etc/ssh/sshd_config.d/*.conf"
HOST_KEYS = {"ed25519": "/etc/ssh/ssh_host_ed25519_key", "rsa": "/etc/ssh/ssh_host_rsa_key"}
# var -> (ssh -Q list to filter by, sshd keyword)
CRYPTO = {
    "sshd_kex_algorithms": ("kex", "KexAlgorithms"),
    "sshd_ciphers": ("cipher", "Ciphers"),
    "sshd_macs": ("mac", "MACs"),
    "sshd_host_key_algorithms": ("key-sig", "HostKeyAlgorithms"),
    "sshd_pubkey_accepted_algorithms": ("key-sig", "PubkeyAcceptedAlgorithms"),
}


def yes_no(value):
    return "yes" if value else "no"


def names(ctx, var):
    value = ctx.vars[var]
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ctx.bad_var(var, "must be a list of names")
    return value


def permit_root_login(ctx):
    value = str(ctx.vars["sshd_permit_root_login"]).lower()
    if value == "auto":
        # Root login off, unless gpuprov itself logs in as root: then keys only.
        return "prohibit-password" if ctx.session.user == "root" else "no"
    if value not in ("no", "prohibit-password", "yes", "forced-commands-only"):
        raise ctx.bad_var("sshd_permit_root_login",
                          "must be auto, no, prohibit-password, forced-commands-only or yes")
    return value


def permit_open(ctx):
    value = ctx.vars["sshd_permit_open"]
    if value == "auto":
        ports = [ctx.vars.get("jupyter_port", 8888)]
        if ctx.vars.get("container_ssh", False):
            ports.append(ctx.vars.get("container_ssh_port", 2222))
        return " ".join(f"{host}:{port}" for port in ports for host in ("localhost", "127.0.0.1"))
    if value == "any":
        return "any"
    return " ".join(names(ctx, "sshd_permit_open")) or "none"


def crypto(ctx, info, var):
    kind, keyword = CRYPTO[var]
    wanted = names(ctx, var)
    known = info.algorithms.get(kind)
    usable = [n for n in wanted if known is None or n in known]
    if var == "sshd_host_key_algorithms" and not ctx.vars["sshd_rsa_host_key_bits"]:
        usable = [n for n in usable if not n.startswith("rsa-")]
    if not usable:
        raise ctx.bad_var(var, f"none of these names is known to OpenSSH "
                               f"{'.'.join(map(str, info.version))} on this host",
                          hint=f"see `ssh -Q {kind}` on the host")
    return keyword, ",".join(usable)


def settings(ctx, info):
    """The drop-in's keywords, in order."""
    v = ctx.vars
    password = yes_no(v["sshd_password_authentication"])
    rsa_bits = int(v["sshd_rsa_host_key_bits"])
    if rsa_bits and rsa_bits < 3072:
        raise ctx.bad_var("sshd_rsa_host_key_bits", "must be 0 or at least 3072")
    s = {
        "PasswordAuthentication": password,
        "KbdInteractiveAuthentication": password,
        "PubkeyAuthentication": "yes",
        "AuthenticationMethods": "any" if password == "yes" else "publickey",
        "PermitRootLogin": permit_root_login(ctx),
        "PermitEmptyPasswords": "no",
        "UsePAM": "yes",
        "MaxAuthTries": str(int(v["sshd_max_auth_tries"])),
        "LoginGraceTime": str(int(v["sshd_login_grace_time"])),
        "MaxStartups": str(v["sshd_max_startups"]),
        "ClientAliveInterval": str(int(v["sshd_client_alive_interval"])),
        "ClientAliveCountMax": str(int(v["sshd_client_alive_count_max"])),
        "X11Forwarding": yes_no(v["sshd_x11_forwarding"]),
        "AllowAgentForwarding": yes_no(v["sshd_allow_agent_forwarding"]),
        "AllowTcpForwarding": str(v["sshd_allow_tcp_forwarding"]),
        "PermitOpen": permit_open(ctx),
        "LogLevel": str(v["sshd_log_level"]),
    }
    if users := names(ctx, "ssh_allow_users"):
        s["AllowUsers"] = " ".join(users)
    if groups := names(ctx, "ssh_allow_groups"):
        s["AllowGroups"] = " ".join(groups)
    for var in CRYPTO:
        keyword, value = crypto(ctx, info, var)
        s[keyword] = value
    if info.version >= (9, 1):
        s["RequiredRSASize"] = str(int(v["sshd_required_rsa_size"]))
    extra = v["sshd_extra_settings"] or {}
    if not isinstance(extra, dict):
        raise ctx.bad_var("sshd_extra_settings", "must be a mapping of sshd keyword: value")
    # YAML's true/false would be written as True/False, which sshd rejects
    s.update({str(k): yes_no(val) if isinstance(val, bool) else str(val)
              for k, val in extra.items()})
    return s


def dropin(ctx, values):
    lines = ["# Managed by gpuprov (role sshd_hardening): edits are undone by the next apply.",
             "# Read before sshd_config's own settings and 50-cloud-init.conf: sshd keeps",
             "# the first value it reads for a keyword."]
    lines += [f"HostKey {HOST_KEYS['ed25519']}"]
    if ctx.vars["sshd_rsa_host_key_bits"]:
        lines += [f"HostKey {HOST_KEYS['rsa']}"]
    lines += [f"{key} {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def reload_command(ctx):
    name = "sshd" if ctx.os.family == "rhel" else "ssh"
    if ctx.system.init == "systemd":
        # reload-or-restart: with socket activation (Ubuntu 22.10+) ssh.service
        # may not be running; starting it then is what a reload means.
        return Command("systemctl", "reload-or-restart", name)
    return Command("service", name, "reload")


def tasks(ctx):
    ctx.require_supported_os()
    # asked together (one batch): `sshd -T` answers nothing harmful where there is no sshd
    main, info = ctx.facts(FileState(SSHD_CONFIG, sudo=True), sshd_state())
    if main is None:
        # No SSH server (a local run on a machine without one): nothing to
        # harden, and installing one would open a new door, not close one.
        raise ctx.skip("no sshd installed")
    if main.content is None:
        raise ctx.fail(f"{SSHD_CONFIG} is not a readable text file")
    values = settings(ctx, info)
    files = [SshdFile(str(ctx.vars["sshd_dropin"]), dropin(ctx, values).encode())]
    wanted_main = include_first(main.content.decode(), INCLUDE)
    if wanted_main != main.content.decode():
        files.append(SshdFile(SSHD_CONFIG, wanted_main.encode(), main.mode))
    conflicts = str(ctx.vars["sshd_conflicts"]).lower()
    if conflicts not in CONFLICT_CHOICES:
        raise ctx.bad_var("sshd_conflicts", "must be fail or comment")
    yield SshdConfig(
        files, values, session=ctx.session, reload=reload_command(ctx),
        revert_after=int(ctx.vars["sshd_revert_after"]),
        preflight=bool(ctx.vars["sshd_preflight"]),
        rsa_host_key_bits=int(ctx.vars["sshd_rsa_host_key_bits"]),
        strong_moduli=bool(ctx.vars["sshd_strong_moduli"]), conflicts=conflicts)
