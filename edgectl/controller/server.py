"""Serve the app: the store, the RADIUS feed's sockets, the HTTP server."""

from __future__ import annotations

import gc

from edgectl.controller.app import create_app
from edgectl.controller.radius.server import RadiusServer, bind
from edgectl.controller.radius.wiring import feed_of
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store
from edgectl.http_server import Deadlines
from edgectl.http_server import serve as serve_http


def deadlines(settings: Settings) -> Deadlines:
    """The request deadlines of this controller's settings."""
    return Deadlines(header_timeout=settings.header_timeout, body_timeout=settings.body_timeout)


def _radius(settings: Settings, store: Store) -> RadiusServer | None:
    """The accounting feed, its sockets bound now: a port in use is a clear
    refusal at start, not a failure inside the running app."""
    if settings.radius is None:
        return None
    sockets = bind(settings.radius.listen)
    return RadiusServer(settings.radius, feed_of(store), sockets)


def serve(settings: Settings) -> None:
    store = Store.open(settings.database_url, migrate=settings.migrate_on_start)
    try:
        app = create_app(settings, store, radius=_radius(settings, store))
        # What start-up built (modules, the app, the store's metadata) lives as
        # long as the process: out of the collector's sight, a full collection
        # no longer walks it.  A RADIUS feed batch allocates enough to trigger
        # those, and walking this heap was a third of the batch's CPU.
        gc.collect()
        gc.freeze()
        serve_http(
            app,
            deadlines(settings),
            host=settings.host,
            port=settings.port,
            ssl_certfile=settings.tls_certfile,
            ssl_keyfile=settings.tls_keyfile,
            log_level=settings.log_level,
            # One process: the long-poll notifier and SQLite's single writer
            # both live in it.  Scale out with PostgreSQL and more processes.
            workers=None,
            proxy_headers=settings.allow_plain_http,
            # Parked long-polls would otherwise hold a shutdown for up to
            # max_wait; agents simply poll again.
            timeout_graceful_shutdown=5,
            timeout_keep_alive=settings.keep_alive_timeout,
            limit_concurrency=settings.max_connections,
        )
    finally:
        store.close()
