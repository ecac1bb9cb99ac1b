#!/bin/sh
# gpuprov-fleet-start (systemd variant): runs as PID 1 of a new pid/mount/uts/
# net/ipc namespace (see host.py), builds the host's disk and network like
# start-host.sh, then boots the root with systemd-nspawn, systemd as PID 1.
# Args: BASE UPPER WORK MERGED HOSTNAME ADDRESS/PREFIX MARKER CGROUP
set -eu
base=$1 upper=$2 work=$3 merged=$4 name=$5 addr=$6 cgroup=$8

# Our own cgroup, in the v1 name=systemd hierarchy and in the v2 one (this
# machine's cgroups are a v1/v2 hybrid, its PID 1 is not systemd): nspawn
# --keep-unit runs the container in the caller's cgroup, and without this
# every host would share the root cgroup (and systemd's system.slice there).
hierarchies=
for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
    if [ -w "$h/cgroup.procs" ] && { [ "$h" != /sys/fs/cgroup ] ||
            [ "$(stat -fc %T "$h")" = cgroup2fs ]; }; then
        mkdir -p "$h/$cgroup"
        echo 0 >"$h/$cgroup/cgroup.procs"   # 0: this process
        hierarchies="$hierarchies $h/$cgroup"
    fi
done

mount --make-rprivate /
# nspawn keeps state under /run/systemd/nspawn: in a /run of our own, never
# this machine's (whose /run may not even be a tmpfs: nspawn then refuses to
# clean up after itself).
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
# nspawn reads /proc/<pid> of the pids it sees: this pid namespace's /proc.
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t overlay overlay -o "lowerdir=$base,upperdir=$upper,workdir=$work" "$merged"
hostname "$name"

# The container shares this network namespace (no --private-network), so the
# address survives the container's reboots like a real NIC's config would.
. "$(dirname "$0")/host-net.sh"

# A reboot inside the host (systemctl reboot) ends nspawn with 133: boot the
# same disk again, with a fresh /run (nspawn mounts one at every start), and a
# fresh, empty, writable /sys/module (--tmpfs, over nspawn's read-only sysfs):
# where the test doubles "load" the nvidia module (see start-host.sh).
while :; do
    # The container's cgroups of the boot before (nspawn's payload/ and
    # supervisor/, systemd's tree below): a fresh start needs a clean cgroup.
    for c in $hierarchies; do
        find "$c" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    rc=0
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 SYSTEMD_NSPAWN_TMPFS_TMP=0 \
        systemd-nspawn --quiet -D "$merged" --machine="$name" --register=no --keep-unit \
        --resolv-conf=off --timezone=off --link-journal=no --console=read-only \
        --drop-capability=CAP_SYS_MODULE,CAP_SYS_TIME \
        --tmpfs=/sys/module:mode=0755,nosuid,nodev,noexec,size=1m -b || rc=$?
    [ "$rc" = 133 ] || exit "$rc"
    echo "fleet: $name reboots"
done
