"""``edgectl agent``: the long-running gateway agent.

Keeps ``table inet edgectl`` equal to what the controller wants for this
gateway: restore last-known-good from disk, then snapshot, then long-polled
deltas, each applied atomically; repairs drift; reports status; serves
Prometheus metrics.  Nothing here runs at import time.
"""
