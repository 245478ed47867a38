"""Wire config -> kernel, controller client, state store, metrics -> the loop's threads.

Stopping (SIGTERM/SIGINT) waits for a commit in progress to finish, then
leaves: the table stays in force (fail-static).  Only ``decommission``
removes it.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgectl.agent.daemon.config import AgentConfig, read_token
from edgectl.agent.daemon.kernel import Kernel
from edgectl.agent.daemon.loop import Agent, ControllerPort, LoopSettings
from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.daemon.offender_listener import OffenderListener
from edgectl.agent.daemon.offenders import OffenderBook
from edgectl.agent.daemon.protocol import Answer, ControllerError
from edgectl.agent.persist import StateStore
from edgectl.agent.table import SPEC

if TYPE_CHECKING:
    from edgectl.agent.daemon.metrics_http import MetricsServer

log = logging.getLogger("edgectl.agent")


class _Offline:
    """The controller while restoring (all of ``restore_only``): never asked, since
    restore reads the disk alone.

    Not the HTTP client: importing it (httpx) is 0.1-0.2 s of a boot's
    enforcement gap, for a step that runs before the network is up.
    """

    def desired(self, since: int | None, wait: float, epoch: str | None) -> Answer:
        raise ControllerError("restore only: the controller is not asked")

    def report(
        self, applied_revision: int, detail: dict[str, Any], offenders: dict[str, Any] | None
    ) -> bool:
        raise ControllerError("restore only: the controller is not asked")


def restore_only(config: AgentConfig) -> bool:
    """Commit the persisted last-known-good state and return, never contacting the controller.

    For a unit ordered before the network comes up: the gateway enforces
    before it forwards its first packet, whatever the controller is doing.
    """
    agent = Agent(
        LoopSettings.of(config),
        Kernel(config.netns),
        _Offline(),
        StateStore(config.state_dir, payload=True),
        Metrics(config.gateway),
        stop=threading.Event(),
        persist_in_background=False,
    )
    return agent.restore()


def _client(config: AgentConfig) -> ControllerPort:
    from edgectl.agent.daemon.client import ControllerClient  # it imports httpx

    return _connected(ControllerClient, config)


def _first_snapshot(config: AgentConfig) -> ControllerPort:
    # The standard library's HTTP client: the first snapshot is in the kernel
    # before httpx has been imported.
    from edgectl.agent.daemon.client import FirstSnapshot

    return _connected(FirstSnapshot, config)


def _connected(kind: Callable[..., ControllerPort], config: AgentConfig) -> ControllerPort:
    """A client of ``kind`` to the configured controllers."""
    return kind(
        config.urls,
        config.gateway,
        lambda: read_token(config.token_file),
        request_timeout=config.request_timeout,
        ca_file=config.ca_file,
    )


def run(config: AgentConfig, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    kernel = Kernel(config.netns)
    metrics = Metrics(config.gateway)
    offenders = OffenderListener(config.netns, OffenderBook(config.offenders_window), metrics)
    agent = Agent(
        LoopSettings.of(config),
        kernel,
        _Offline(),  # until the restore is done (below)
        StateStore(config.state_dir, payload=True),
        metrics,
        stop=stop,
        persist_in_background=True,
        offenders=offenders,
    )
    server: MetricsServer | None = None
    try:
        if config.metrics_listen is not None:
            from edgectl.agent.daemon.metrics_http import MetricsServer

            server = MetricsServer(config.metrics_listen, metrics, kernel.counters)
            server.start()
            host, port = server.address
            log.info("metrics on http://%s:%d/metrics", host, port)
        # Before anything talks to the controller: enforce what we last knew.
        agent.restore()
        if agent.applied is None:
            # Nothing on disk: the first snapshot without waiting for httpx
            # (a failure is logged, and the loop below asks again).
            agent.controller = _first_snapshot(config)
            agent.sync_once()
        # The HTTP client only now: importing it (httpx, 0.1-0.2 s) would
        # delay the rules a restarted gateway enforces from disk.
        agent.controller = _client(config)
        threads = list(agent.threads())
        for thread in threads:
            thread.start()
        log.info(
            "agent for gateway %s started (controller %s, netns %s)",
            config.gateway,
            ", ".join(config.urls),
            config.netns or "-",
        )
        stop.wait()
        # A commit in progress finishes (nft transactions are all-or-nothing
        # anyway; this keeps the state file in step with the kernel).
        with kernel.lock:
            agent.stopping()
            log.info("stopping; table %s stays in force", SPEC)
    finally:
        if server is not None:
            server.close()
    return 0


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
