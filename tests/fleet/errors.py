"""Why the fleet cannot be built here (the tests then skip with this reason)."""


class FleetUnavailable(Exception):
    """This machine cannot run the fleet (not root, no unshare, no debootstrap...)."""


class FleetError(Exception):
    """The fleet was buildable but something in it failed (a real test failure)."""
