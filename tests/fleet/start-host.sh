#!/bin/sh
# gpuprov-fleet-start: runs as PID 1 of a new pid/mount/uts/net namespace
# (see host.py), builds the host's root and execs its init.
# Args: BASE UPPER WORK MERGED HOSTNAME ADDRESS/PREFIX
set -eu
base=$1 upper=$2 work=$3 merged=$4 name=$5 addr=$6

mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$base,upperdir=$upper,workdir=$work" "$merged"
mount -t proc -o nosuid,nodev,noexec proc "$merged/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$merged/sys"
# A writable, empty stand-in for /sys/module: the test doubles "load" the nvidia module
# there (/sys/module/nvidia/version: boot hook, postinst) and gpuprov reads it as on a
# real kernel; the real machine's modules stay out of sight (/proc/modules does not).
mount -t tmpfs -o mode=0755,nosuid,nodev,noexec,size=1m tmpfs "$merged/sys/module"
mount -t tmpfs -o mode=0755,nosuid,size=4m tmpfs "$merged/dev"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$merged/run"
cd "$merged/dev"
mknod -m 666 null c 1 3; mknod -m 666 zero c 1 5; mknod -m 666 full c 1 7
mknod -m 666 random c 1 8; mknod -m 666 urandom c 1 9; mknod -m 666 tty c 5 0
mkdir -m 755 pts; mkdir -m 1777 shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs shm
ln -s pts/ptmx ptmx; ln -s /proc/self/fd fd
ln -s /proc/self/fd/0 stdin; ln -s /proc/self/fd/1 stdout; ln -s /proc/self/fd/2 stderr
hostname "$name"

. "$(dirname "$0")/host-net.sh"

cd "$merged"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
# No module loading, no clock setting: the kernel is the real machine's.
exec setpriv --bounding-set -sys_module,-sys_time /sbin/init </dev/null >/dev/null 2>&1
