"""The account id alphabet, shared by the API's request models and the store's feed.

Kept free of FastAPI and SQLAlchemy: the RADIUS feed reaches the store
without passing through a request model, and must refuse the same ids.
"""

from __future__ import annotations

import re

# It fits what a RADIUS User-Name is in practice (cust-42, user@realm.example,
# a MAC 00:11:22:aa:bb:cc, a+tag): ASCII letters, digits and . _ - @ + :,
# starting with a letter or digit.  No "/" (a path separator, also as %2F), no
# leading "." (".." is a dot-segment clients normalise away), no spaces,
# "%", "?" or "#" (each means something else in a URL).
ACCOUNT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+:-]{0,199}$"
ACCOUNT_RULE = "an account id is 1-200 of A-Z a-z 0-9 . _ - @ + : starting with a letter or digit"

_ACCOUNT = re.compile(ACCOUNT_PATTERN)


def is_account(text: object) -> bool:
    return isinstance(text, str) and _ACCOUNT.fullmatch(text) is not None
