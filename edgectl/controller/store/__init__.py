"""The store: every read and write of controller state, and the only user of SQLAlchemy."""

from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store

__all__ = ["Change", "Store"]
