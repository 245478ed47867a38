"""Fresh, migrated databases per test on SQLite and PostgreSQL.

Migrating once and copying (a file for SQLite, a TEMPLATE database for
PostgreSQL) keeps a fresh database per test at a few milliseconds.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import sqlalchemy as sa

from edgectl.controller.store import Store

_counter = itertools.count()


class SqliteBackend:
    name = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        Store.open(f"sqlite:///{self.template}", migrate=True).close()

    def fresh_url(self) -> str:
        target = self.root / f"db{next(_counter)}.db"
        shutil.copyfile(self.template, target)
        os.chmod(target, 0o600)
        return f"sqlite:///{target}"


class PostgresBackend:
    name = "postgresql"

    def __init__(self, admin_url: str) -> None:
        self.admin = sa.make_url(admin_url)
        self.engine = sa.create_engine(
            self.admin, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )
        self.template = f"edgectl_template_{os.getpid()}"
        with self.engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.template}"')
            connection.exec_driver_sql(f'CREATE DATABASE "{self.template}"')
        Store.open(self._url(self.template), migrate=True).close()
        self.created: list[str] = []

    def _url(self, database: str) -> str:
        return self.admin.set(database=database).render_as_string(hide_password=False)

    def fresh_url(self) -> str:
        name = f"edgectl_test_{os.getpid()}_{next(_counter)}"
        with self.engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return self._url(name)

    def drop(self, url: str) -> None:
        name = sa.make_url(url).database
        with self.engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with self.engine.connect() as connection:
            for name in [*self.created, self.template]:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.engine.dispose()
