"""The feed's store: ``store/feed.py`` behind the server's ``Feed`` seam."""

from __future__ import annotations

import functools

from edgectl.controller.radius.server import Feed
from edgectl.controller.store import Store
from edgectl.controller.store import feed as store_feed


def feed_of(store: Store) -> Feed:
    return Feed(
        apply=functools.partial(store_feed.apply_events, store),
        open_sessions=functools.partial(store_feed.open_sessions_by_source, store),
    )
