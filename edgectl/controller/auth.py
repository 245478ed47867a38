"""Roles and bearer tokens.

Tokens are 256 random bits, so a plain SHA-256 is enough to make a leaked
database useless for logging in (nothing to brute-force), and it keeps the
lookup an indexed equality instead of a scan over salted hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

TOKEN_PREFIX = "edg_"


class Role(StrEnum):
    VIEWER = "viewer"
    ABUSE = "abuse"
    NETOPS = "netops"
    AGENT = "agent"
    REPORTER = "reporter"  # a mailbox or feed relay: may only POST /v1/reports
    # The notice portal: looks up holds by address, records notices and
    # self-releases (edgectl.controller.api.routers.portal), nothing else.
    PORTAL = "portal"


READERS = frozenset({Role.VIEWER, Role.ABUSE, Role.NETOPS})
HOLDERS = frozenset({Role.ABUSE, Role.NETOPS})  # quarantines and exemptions
NETOPS = frozenset({Role.NETOPS})


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_hash(left: str, right: str) -> bool:
    return hmac.compare_digest(left, right)
