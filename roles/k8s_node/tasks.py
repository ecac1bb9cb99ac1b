"""k8s_node: the prerequisites of a kubeadm node (k8s_node_enabled: true).

Checklist, per host:
1. swap kept off at boot: swap lines in /etc/fstab commented out (the rest of
   the file byte for byte) and, under systemd, the active *.swap units masked
   (swap files and zram have no fstab line);
2. swap off now: `swapoff -a` while /proc/swaps lists any;
3. overlay and br_netfilter listed in /etc/modules-load.d/k8s.conf and loaded
   now: modprobe unless loaded (br_netfilter: or its sysctls already there,
   built in). A modprobe that fails fails the task: a kubelet would not work;
4. the sysctls in /etc/sysctl.d/99-k8s.conf, applied with `sysctl -p FILE`
   when the file changed, and each live value that differs (read from
   /proc/sys) set again: drift-check reports it;
5. kubelet/kubeadm/kubectl are not installed here: their absence is reported
   in the task's data (a note), not a failure.
"""

from gpuprov.command import Command
from gpuprov.facts.files import FileState
from gpuprov.ops.command import command
from gpuprov.ops.file_plan import state_fact
from gpuprov.ops.files import directory, file

from .checks import ActiveSwapUnits, KubeTools, swap_commented

FSTAB = "/etc/fstab"
MODULES_FILE = "/etc/modules-load.d/k8s.conf"
SYSCTL_FILE = "/etc/sysctl.d/99-k8s.conf"
MODULES = ("overlay", "br_netfilter")
SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
}
APPLY = "apply k8s sysctls"
_HEADER = "# Managed by gpuprov (role k8s_node): local edits are overwritten.\n"
# a module built into the kernel has no /sys/module entry with parameters on
# some kernels: br_netfilter's own sysctls prove it is there
_LOADED = {"overlay": "test -d /sys/module/overlay || grep -qw overlay /proc/filesystems",
           "br_netfilter": "test -d /sys/module/br_netfilter || test -d /proc/sys/net/bridge"}

# -e name=value gives strings: "false", "true"
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def enabled(ctx) -> bool:
    value = ctx.vars["k8s_node_enabled"]
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in _TRUE | _FALSE:
        return value if isinstance(value, bool) else text in _TRUE
    raise ctx.bad_var("k8s_node_enabled", "must be true or false")


def fstab(ctx):
    cur = ctx.fact(FileState(FSTAB))
    if cur is None:
        return None
    if cur.content is None:
        raise ctx.fail(f"{FSTAB} is not a regular file gpuprov can read",
                       "comment out its swap lines by hand")
    wanted = swap_commented(cur.content)
    if wanted == cur.content:
        return None
    # owner and mode as they are: only the swap lines are this role's business
    return file(FSTAB, wanted, owner=cur.owner, group=cur.group, mode=cur.mode)


def in_dir(ctx, path: str, content: str, **options):
    """file(path): its directory made first where missing (a minimal Debian has no
    /etc/modules-load.d); an existing one is left as it is."""
    where = path.rsplit("/", 1)[0]
    if ctx.fact(state_fact(where, content=False, probe=where + "/")) is None:
        yield directory(where)
    yield file(path, content, **options)


def tasks(ctx):
    if not enabled(ctx):
        raise ctx.skip("k8s_node_enabled is false")
    edit = fstab(ctx)
    if edit is not None:
        yield edit
    if ctx.system.init == "systemd":
        units = ctx.fact(ActiveSwapUnits())
        if units:
            yield command(Command("systemctl", "mask", "--", *units),
                          name=f"systemctl mask {' '.join(units)}",
                          invalidates=(ActiveSwapUnits,))
    yield command("swapoff -a", only_if="tail -n +2 /proc/swaps | grep -q .",
                  name="swapoff -a (swap is on)")
    yield from in_dir(ctx, MODULES_FILE, _HEADER + "".join(f"{m}\n" for m in MODULES))
    for mod in MODULES:
        yield command(Command("modprobe", mod), unless=_LOADED[mod], name=f"modprobe {mod}")
    yield from in_dir(ctx, SYSCTL_FILE,
                      _HEADER + "".join(f"{k} = {v}\n" for k, v in SYSCTLS.items()), notify=APPLY)
    for key, value in SYSCTLS.items():
        path = "/proc/sys/" + key.replace(".", "/")
        yield command(Command("sysctl", "-w", f"{key}={value}"),
                      unless=f'test "$(cat {path})" = {value}',
                      name=f"sysctl -w {key}={value} (live value differs)")
    yield KubeTools()


def apply_sysctls(ctx):
    if not enabled(ctx):
        return []
    return [command(Command("sysctl", "-p", SYSCTL_FILE), name=f"sysctl -p {SYSCTL_FILE}")]


HANDLERS = {APPLY: apply_sysctls}
