"""onboard_access: an admin user gpuprov reaches with a key, with sudo.

Checklist, per host:
1. the user exists (created with a home and a login shell when missing);
2. ~/.ssh (0700) and each public key in ~/.ssh/authorized_keys (0600), other
   keys kept;
3. /etc/sudoers.d/90-gpuprov-<user>, checked with visudo before it is used.
"""

from gpuprov.command import Command
from gpuprov.facts.users import UserHome
from gpuprov.ops.command import command
from gpuprov.ops.files import directory, file, line


def tasks(ctx):
    user = str(ctx.vars["onboard_user"] or ctx.host.ssh_user or "").strip()
    if not user or user == "root":
        raise ctx.bad_var("onboard_user", "must name the (non-root) admin user to create")
    keys = [str(k).strip() for k in ctx.vars["onboard_authorized_keys"] or []]
    if not keys or any("\n" in k or not k.startswith(("ssh-", "ecdsa-", "sk-")) for k in keys):
        raise ctx.bad_var("onboard_authorized_keys", "must list public keys (ssh-ed25519 AAAA...)")
    sudo = str(ctx.vars["onboard_sudo"])
    if sudo not in ("nopasswd", "password"):
        raise ctx.bad_var("onboard_sudo", "must be nopasswd or password")

    yield command(Command("useradd", "--create-home", "--shell", "/bin/bash", user),
                  unless=f"id {Command(user).shell()}", name=f"user {user}",
                  invalidates=(UserHome,))
    account = ctx.fact(UserHome(user))
    home, group = (account.home, account.group) if account else (f"/home/{user}", user)
    yield directory(f"{home}/.ssh", owner=user, group=group, mode="0700")
    for key in keys:
        yield line(f"{home}/.ssh/authorized_keys", key, create=True, owner=user, group=group,
                   mode="0600", read_as_root=True)
    rule = "NOPASSWD: ALL" if sudo == "nopasswd" else "ALL"
    yield file(f"/etc/sudoers.d/90-gpuprov-{user}",
               f"# Managed by gpuprov onboard\n{user} ALL=(ALL) {rule}\n",
               mode="0440", validate="visudo -cf {}")
