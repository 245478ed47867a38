"""Alembic migrations of the controller's store."""
