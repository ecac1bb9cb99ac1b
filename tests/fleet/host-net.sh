# Sourced by start-host.sh and start-systemd-host.sh: the host's network, in
# its own network namespace. The fleet creates our veth end (eth0) once this
# namespace exists; wait for it, then give it the host's address.
# Uses $name and $addr (ADDRESS/PREFIX) of the sourcing script.
i=0
while ! ip link show eth0 >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 400 ]; then echo "fleet: no eth0 for $name" >&2; exit 1; fi
    sleep 0.05
done
# IPv4 only: nothing (not even IPv6 router solicitations) but our traffic.
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null || true
ip link set lo up
ip addr add "$addr" dev eth0
ip link set eth0 up
