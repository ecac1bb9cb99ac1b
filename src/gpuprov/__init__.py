"""gpuprov: agentless provisioning of GPU deep-learning hosts over SSH."""

__version__ = "0.1.0"
