"""mantisd: the durable per-run log of an agent runtime, and the tools that read it."""

__version__ = "0.1.0"
