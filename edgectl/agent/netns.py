"""Run a piece of code inside a named network namespace, in this thread.

``setns(2)`` moves only the calling thread, and a netlink socket keeps the
namespace it was opened in; so the agent enters, opens or uses its kernel
handle, and leaves, without forking a process per command.  Python 3.11 has
no ``os.setns``, hence ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


class NetnsError(RuntimeError):
    pass


@functools.cache
def _libc() -> ctypes.CDLL:
    # The process's own symbols (libc among them): ctypes.util.find_library
    # would import ~15 ms of modules and run ldconfig, on every start.
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(errno)}")


def netns_path(name: str) -> str:
    if not name or "/" in name or name in {".", ".."}:
        raise NetnsError(f"{name!r} is not a network namespace name")
    return os.path.join(NETNS_RUN_DIR, name)


@contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Enter namespace ``name`` (None: stay where we are) for the ``with`` body."""
    if name is None:
        yield
        return
    try:
        target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(f"no network namespace named {name!r} (see `ip netns list`)") from None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)
