"""Serve the app with uvicorn (uvicorn enters the controller here only)."""

from __future__ import annotations

import uvicorn

from edgectl.controller.app import create_app
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store


def serve(settings: Settings) -> None:
    store = Store.open(settings.database_url, migrate=settings.migrate_on_start)
    try:
        app = create_app(settings, store)
        uvicorn.run(
            app,
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
        )
    finally:
        store.close()
