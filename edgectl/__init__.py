"""edgectl: stop spam at its source, at the network edge."""

__version__ = "0.1.0"
