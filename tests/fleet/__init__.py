"""The SSH test fleet: real Debian 12 hosts in Linux namespaces on this machine.

See tests/fleet/README.md. Nothing here is shipped with gpuprov.
"""
