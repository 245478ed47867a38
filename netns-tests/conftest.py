"""Fixtures for the netns tier: real namespaces, real veths, real TCP.

Every test here is marked ``netns``.  Without root the tier is skipped
locally, but with CI set it fails: a CI job that silently skips its
integration tier proves nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.lab import netns
from edgectl.lab.topology import Topology, new_prefix, remove_leftovers, standard_topology

# The tier's shared fixtures, registered here so a test asks for them by name
# (no import of a fixture function into each test module).
pytest_plugins = ("agent_fixtures", "database_fixtures", "gateway_fixtures")

# Fixed base for every namespace this tier creates; each topology adds its
# own 6-hex token, so concurrent runs never collide and an aborted run's
# leftovers can be found (and removed once their owner is dead).
BASE_PREFIX = "ectl-t"

_HERE = Path(__file__).resolve().parent
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not just this directory's.
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.netns)


@pytest.fixture(scope="session", autouse=True)
def netns_capable() -> None:
    """Skip without root (fail if CI is set); fail if root lacks the capabilities."""
    if os.geteuid() != 0:
        message = "netns tests need root"
        if _in_ci():
            pytest.fail(f"{message}, and CI is set: refusing to skip", pytrace=False)
        pytest.skip(message)
    caps = _effective_caps()
    missing = [
        name
        for name, bit in (("CAP_NET_ADMIN", _CAP_NET_ADMIN), ("CAP_SYS_ADMIN", _CAP_SYS_ADMIN))
        if not caps & (1 << bit)
    ]
    if missing:
        # Root without the capabilities is a broken environment, never a skip.
        pytest.fail(f"running as root but without {', '.join(missing)}", pytrace=False)


@pytest.fixture(scope="session")
def leftovers_removed(netns_capable: None) -> list[str]:
    """Remove namespaces an aborted earlier run left (their owner process is dead)."""
    return remove_leftovers(BASE_PREFIX)


@pytest.fixture(scope="module")
def topology(request: pytest.FixtureRequest, leftovers_removed: list[str]) -> Topology:
    """The standard topology, built once per module and always destroyed.

    Per module, not per session: modules load nft rules into the gateway,
    and a fresh gateway is cheaper (~0.15 s) than trusting every module to
    clean up after itself.
    """
    topo = standard_topology(new_prefix(BASE_PREFIX))
    # Registered before build(): teardown runs even if the build is interrupted.
    request.addfinalizer(topo.destroy)
    return topo.build()


@pytest.fixture
def fresh_prefix(leftovers_removed: list[str]) -> Iterator[str]:
    """A unique prefix for a test that builds its own topology; anything left under it
    is removed afterwards, whatever the test did."""
    prefix = new_prefix(BASE_PREFIX)
    yield prefix
    for name in netns.list_namespaces():
        if name.startswith(f"{prefix}-"):
            netns.delete(name)
