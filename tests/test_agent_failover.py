"""Several controllers: the agent's client moves to the next one when the one it
uses stops answering, keeping the cursor, against real HTTP servers on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from edgectl.agent.daemon.client import ControllerClient
from edgectl.agent.daemon.protocol import ControllerError, Snapshot
from edgectl.model import DesiredState
from edgectl.model.serial import state_to_data


class Controller:
    """A real HTTP server answering desired-state like the controller does;
    ``park`` holds long-polls until ``die`` cuts their connections."""

    def __init__(self, state: DesiredState, status: int = 200) -> None:
        self.state = state
        self.status = status
        self.asked: list[dict[str, list[str]]] = []
        self.park = False
        self.parked = threading.Event()
        self._dead = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.asked.append(parse_qs(urlsplit(self.path).query))
                if outer.park:
                    outer.parked.set()
                    outer._dead.wait(30)
                    # As a process killed with -9: the kernel resets the connection.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.connection.close()
                    return
                document = {
                    "kind": "snapshot",
                    "revision": outer.state.revision,
                    "epoch": "e1",
                    "state": state_to_data(outer.state),
                }
                body = json.dumps(document if outer.status == 200 else {"detail": "no"}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def die(self) -> None:
        """Stop listening (new connections are refused) and reset parked ones."""
        self.server.shutdown()
        self.server.server_close()
        self._dead.set()


@pytest.fixture
def controllers(policy_state: DesiredState) -> Iterator[list[Controller]]:
    started = [Controller(policy_state), Controller(policy_state)]
    yield started
    for controller in started:
        if not controller._dead.is_set():
            controller.die()


def client_for(urls: list[str], pauses: list[float] | None = None) -> ControllerClient:
    # The client's fail-over pause, recorded instead of taken: the tests
    # check its length, and nothing here needs to wait for it.
    def record_pause(seconds: float) -> None:
        if pauses is not None:
            pauses.append(seconds)

    return ControllerClient(
        urls, "gw-a", lambda: "edg_t", request_timeout=3, rng=lambda: 0.5, sleep=record_pause
    )


def test_stays_with_the_first_that_answers(controllers: list[Controller]) -> None:
    a, b = controllers
    client = client_for([a.url, b.url])
    for _ in range(3):
        assert isinstance(client.desired(None, 0), Snapshot)
    assert len(a.asked) == 3 and b.asked == []
    assert client.active_url == a.url


def test_a_dead_controller_is_left_for_the_next_and_the_cursor_goes_along(
    controllers: list[Controller],
) -> None:
    a, b = controllers
    pauses: list[float] = []
    client = client_for([a.url, b.url], pauses)
    client.desired(None, 0)
    a.die()
    started = time.monotonic()
    answer = client.desired(7, 30, "e1")
    assert time.monotonic() - started < 5
    assert isinstance(answer, Snapshot)
    assert b.asked == [{"wait": ["30"], "since": ["7"], "epoch": ["e1"]}]
    assert client.active_url == b.url
    assert pauses == [0.25]  # half the 0.5 s jitter, as rng said
    client.desired(7, 0, "e1")  # and stays there
    assert len(b.asked) == 2


def test_a_parked_long_poll_cut_by_a_dying_controller_moves_on_at_once(
    controllers: list[Controller],
) -> None:
    a, b = controllers
    a.park = True
    client = client_for([a.url, b.url])
    result: dict[str, Any] = {}

    def poll() -> None:
        result["answer"] = client.desired(9, 30, "e1")

    waiter = threading.Thread(target=poll)
    waiter.start()
    assert a.parked.wait(10)
    started = time.monotonic()
    a.die()
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 5
    assert isinstance(result["answer"], Snapshot)
    assert b.asked[0]["since"] == ["9"] and b.asked[0]["epoch"] == ["e1"]


def test_every_controller_down_is_one_error(controllers: list[Controller]) -> None:
    a, b = controllers
    client = client_for([a.url, b.url])
    a.die()
    b.die()
    with pytest.raises(ControllerError, match="no controller answers \\(2 tried"):
        client.desired(None, 0)


def test_a_5xx_moves_on_but_a_refusal_does_not(controllers: list[Controller]) -> None:
    a, b = controllers
    a.status = 503
    client = client_for([a.url, b.url])
    assert isinstance(client.desired(None, 0), Snapshot)
    assert client.active_url == b.url
    b.status = 401  # the token: any controller of the database would say the same
    with pytest.raises(ControllerError) as caught:
        client.desired(None, 0)
    assert caught.value.status == 401
    assert len(a.asked) == 1  # not asked again
