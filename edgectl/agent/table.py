"""The one table edgectl owns, named once: ``table inet edgectl``.

nft scripts spell it ``inet edgectl`` (``SPEC``); netlink names the family
by protocol number (``NFPROTO``) and the table by ``NAME``.  edgectl never
touches another table, so every read, write and message takes these.
"""

from __future__ import annotations

from edgectl.agent.netlink.constants import NFPROTO_INET

NAME = "edgectl"
FAMILY = "inet"  # both IPv4 and IPv6 in one table: one set of chains for both
NFPROTO = NFPROTO_INET
SPEC = f"{FAMILY} {NAME}"
