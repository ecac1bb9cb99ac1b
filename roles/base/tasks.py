"""base: a login banner that says the host is managed, and synchronised time.

The demo role of the engine: one file, packages, a drop-in with a handler,
and a service, on the Debian and RHEL families.
"""

from gpuprov.ops.files import directory, file, line
from gpuprov.ops.package_specs import PackageNameError
from gpuprov.ops.packages import packages
from gpuprov.ops.services import service


def chrony(ctx):
    """(service name, drop-in directory) on this host's distro."""
    if ctx.os.family == "rhel":
        return "chronyd", "/etc/chrony.d"
    return "chrony", "/etc/chrony/conf.d"   # Debian 12, Ubuntu 22.04+: confdir by default


def tasks(ctx):
    yield file("/etc/motd", ctx.render("motd.j2"))
    if ctx.vars["base_packages"]:
        try:
            op = packages(ctx.os, ctx.vars["base_packages"], source="base_packages")
        except PackageNameError as exc:
            raise ctx.bad_var("base_packages", exc.message.partition(": ")[2], exc.hint) from None
        yield op
    if not ctx.vars["base_time_sync"]:
        return
    name, confdir = chrony(ctx)
    yield packages(ctx.os, ["chrony"])
    if ctx.os.family == "rhel":
        # RHEL's chrony.conf reads no drop-in directory unless told to.
        yield line("/etc/chrony.conf", f"include {confdir}/*.conf", notify="restart chrony")
    yield directory(confdir)
    yield file(f"{confdir}/gpuprov.conf", ctx.render("chrony.conf.j2"), notify="restart chrony")
    yield service(name, state="started", enabled=True)


HANDLERS = {
    "restart chrony": lambda ctx: [service(chrony(ctx)[0], state="restarted")],
}
