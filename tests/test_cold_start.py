"""A cold start's first snapshot: checked as columns, written to the kernel from them,
the model built after -- the same table, the same state as the ordinary path.

The kernel side (an agent started with no state file against a real
controller) is netns-tests/test_agent_system.py and bench/agent_steady.py.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgectl.agent.daemon.client import FirstSnapshot
from edgectl.agent.daemon.kernel import Commit
from edgectl.agent.daemon.loop import Agent, LoopSettings
from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.daemon.protocol import ColumnSnapshot, ControllerError, Snapshot, parse_answer
from edgectl.agent.kernel_write import pack_columns, pack_keys
from edgectl.agent.keys import is_exact
from edgectl.agent.render import render_full
from edgectl.model import DesiredState
from edgectl.model.delta import persistent
from edgectl.model.errors import ModelError
from edgectl.model.serial import StateColumns, state_columns, state_from_data, state_to_data

from .conftest import NOW
from .held_states import DOUBTED_ENTRIES, held_states
from .test_agent_loop import FakeController, FakeKernel, FakeStore

# -- the columns against the model ------------------------------------------------

_V6_56 = st.integers(0, 2**8 - 1).map(lambda i: f"2001:db8:1000:{i:x}00::/56")
_KEYS = st.one_of(
    st.integers(0, 2**16 - 1).map(lambda i: f"100.64.{i >> 8}.{i & 255}"),  # exact, v4
    _V6_56,  # exact: the policy's dynamic pool delegates /56s
    st.integers(0, 255).map(lambda i: f"100.65.{i}.0/24"),  # not exact: a range
    st.integers(0, 255).map(lambda i: f"2001:db8:2000:{i:x}00::/60"),  # not exact
)


def _states(base: DesiredState) -> st.SearchStrategy[DesiredState]:
    return held_states(base, _KEYS)


def _sorted(packed: dict[str, list[bytes]]) -> dict[str, list[bytes]]:
    return {name: sorted(elements) for name, elements in packed.items()}


def _columns(state: DesiredState) -> StateColumns:
    columns = state_columns(json.loads(json.dumps(state_to_data(state))))
    assert columns is not None
    return columns


def test_columns_write_what_the_model_writes(policy_state: DesiredState) -> None:
    """For any mix of keys (exact and not, IPv4 and IPv6, timed, expired, exempt):
    the packed keys, the structure render and the state built after the commit
    are those of the ordinary path (``state_from_data``, ``pack_keys``, ``render_full``)."""

    @settings(max_examples=60, deadline=None)
    @given(_states(policy_state), st.integers(0, 3 * 86400))
    def check(state: DesiredState, later: int) -> None:
        data = json.loads(json.dumps(state_to_data(state)))
        columns = state_columns(data)
        assert columns is not None
        assert columns.state() == state_from_data(data) == state
        now = NOW + timedelta(seconds=later)
        assert _sorted(pack_columns(columns, now)) == _sorted(pack_keys(state, now))
        # An adopted state's maps are KeyMaps (another order; values() is one pass).
        assert _sorted(pack_keys(persistent(state), now)) == _sorted(pack_keys(state, now))
        lengths = state.delegated_lengths()
        structure = columns.subset(lambda version, length: not is_exact(version, length, lengths))
        assert all(not is_exact(k[0], k[2], lengths) for k in structure.quarantines)
        assert str(render_full(structure, now, keys=False).transaction) == str(
            render_full(state, now, keys=False).transaction
        )

    check()


@pytest.mark.parametrize(
    "twin",
    [
        "100.64.0.5",
        "100.64.0.5/32",  # the same key written as a prefix: packed and parsed apart
    ],
)
def test_a_key_given_twice_is_left_to_the_model_which_names_it(
    policy_data: dict[str, Any], twin: str
) -> None:
    data = {
        **policy_data,
        "quarantines": [
            {"key": "100.64.0.5", "mode": "smtp"},
            {"key": twin, "mode": "block"},
        ],
    }
    assert state_columns(data) is None
    with pytest.raises(ModelError, match=r"100\.64\.0\.5.*given twice"):
        state_from_data(data)


def test_the_columns_keep_the_document_order(policy_data: dict[str, Any]) -> None:
    """Dotted quads and other keys are held apart; the state built puts them back
    in the document's order (a state file written from it lists them the same)."""
    keys = ["100.64.0.7", "2001:db8:1000:100::/56", "100.64.0.5", "100.65.3.0/24", "100.64.0.6"]
    data = {**policy_data, "quarantines": [{"key": key, "mode": "smtp"} for key in keys]}
    columns = state_columns(data)
    assert columns is not None
    assert len(columns.quarantines.v4) == 3 and len(columns.quarantines.others) == 2
    built = columns.state()
    assert [str(key) for key in built.quarantines] == keys
    assert built == state_from_data(data)
    assert state_to_data(built) == state_to_data(state_from_data(data))


@pytest.mark.parametrize(("entry", "field"), DOUBTED_ENTRIES)
def test_an_entry_the_bulk_check_doubts_is_named_by_the_model(
    policy_data: dict[str, Any], entry: dict[str, str], field: str
) -> None:
    data = {**policy_data, "quarantines": [{"key": "100.64.0.5", "mode": "smtp"}, entry]}
    assert state_columns(data) is None
    with pytest.raises(ModelError, match=field):
        state_from_data(data)
    # The envelope parser then falls back to the model, which refuses it whole.
    document = {"kind": "snapshot", "revision": data.get("revision", 0), "state": data}
    with pytest.raises(ControllerError, match=field):
        parse_answer(document, columns=True)


def test_a_bad_structure_field_is_refused_before_any_column(
    policy_data: dict[str, Any],
) -> None:
    with pytest.raises(ModelError, match=r"settings\.block_action"):
        state_columns({**policy_data, "settings": {"block_action": "explode"}})


def test_a_snapshot_envelope_parses_to_columns_only_when_asked(
    policy_state: DesiredState,
) -> None:
    document = {
        "kind": "snapshot",
        "revision": policy_state.revision,
        "state": state_to_data(policy_state),
    }
    assert isinstance(parse_answer(document), Snapshot)
    answer = parse_answer(document, columns=True)
    assert isinstance(answer, ColumnSnapshot)
    assert answer.columns.state() == policy_state
    with pytest.raises(ControllerError, match="says revision"):
        parse_answer({**document, "revision": policy_state.revision + 1}, columns=True)


# -- the agent ---------------------------------------------------------------------


class ColumnKernel(FakeKernel):
    """FakeKernel that also takes a snapshot's columns (None: a table is there)."""

    def __init__(self, *, table_there: bool = False) -> None:
        super().__init__()
        self.table_there = table_there
        self.cut: list[DesiredState] = []

    def sync_columns(self, columns: StateColumns) -> Commit | None:
        if self.table_there:
            return None
        return self._commit("columns", columns.state())

    def cut_held(self, state: DesiredState) -> None:
        self.cut.append(state)


def _agent(kernel: FakeKernel, answer: ColumnSnapshot) -> Agent:
    return Agent(
        LoopSettings.defaults(answer.columns.structure.gateway),
        kernel,
        FakeController(answer),
        FakeStore(),
        Metrics(answer.columns.structure.gateway),
    )


def _answer(state: DesiredState) -> ColumnSnapshot:
    return ColumnSnapshot(state.revision, _columns(state), "ab12")


def test_a_cold_start_writes_the_columns_then_adopts_the_model(
    policy_state: DesiredState,
) -> None:
    kernel = ColumnKernel()
    agent = _agent(kernel, _answer(policy_state))
    assert agent.sync_once()
    assert kernel.commits == ["columns"]
    assert agent.applied is not None and agent.applied.state == policy_state
    assert kernel.cut == [policy_state]  # held keys' open flows cut, as a full sync does
    assert (agent.cursor, agent.epoch) == (policy_state.revision, "ab12")
    store = agent.store
    assert isinstance(store, FakeStore) and store.persisted is not None
    assert store.persisted.state == policy_state and store.deltas == [None]  # a whole snapshot


def test_columns_onto_an_existing_table_go_the_ordinary_way(
    policy_state: DesiredState,
) -> None:
    kernel = ColumnKernel(table_there=True)
    agent = _agent(kernel, _answer(policy_state))
    assert agent.sync_once()
    assert kernel.commits == ["full"]  # one transaction over the live table
    assert agent.applied is not None and agent.applied.state == policy_state


def test_columns_with_a_state_applied_go_the_ordinary_way(policy_state: DesiredState) -> None:
    kernel = ColumnKernel()
    agent = _agent(kernel, _answer(policy_state))
    applied = replace(policy_state, revision=policy_state.revision - 1, quarantines={})
    agent._snapshot(applied, "ab12")
    assert agent.sync_once()
    assert kernel.commits == ["full", "delta"]  # no sync_columns over what is applied
    assert agent.applied is not None and agent.applied.state == policy_state


def test_columns_of_another_gateway_are_refused(policy_state: DesiredState) -> None:
    kernel = ColumnKernel()
    agent = _agent(kernel, _answer(replace(policy_state, gateway="gw-other")))
    agent.settings = LoopSettings.defaults("gw-mine")
    assert not agent.sync_once()
    assert kernel.commits == [] and agent.applied is None


# -- the first request over the standard library -------------------------------------


class _Controller:
    """A real HTTP server on loopback answering the desired-state path."""

    def __init__(self, status: int, body: bytes, tls: ssl.SSLContext | None = None) -> None:
        self.status, self.body = status, body
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Authorization")))
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def controller(policy_state: DesiredState) -> Iterator[_Controller]:
    document = {
        "kind": "snapshot",
        "revision": policy_state.revision,
        "state": state_to_data(policy_state),
        "epoch": "ab12",
    }
    server = _Controller(200, json.dumps(document).encode())
    yield server
    server.close()


def _closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.server_close()
    return url


def test_the_first_snapshot_comes_as_columns_with_the_token(
    controller: _Controller, policy_state: DesiredState
) -> None:
    fetch = FirstSnapshot([controller.url + "/"], "gw-1", lambda: "edg_secret", request_timeout=5)
    answer = fetch.desired(None, 30.0)
    assert isinstance(answer, ColumnSnapshot) and answer.epoch == "ab12"
    assert answer.columns.state() == policy_state
    assert controller.requests == [
        ("/v1/gateways/gw-1/desired-state?wait=30.0", "Bearer edg_secret")
    ]


def test_the_first_snapshot_tries_the_next_controller(controller: _Controller) -> None:
    fetch = FirstSnapshot(
        [_closed_port_url(), controller.url], "gw-1", lambda: "t", request_timeout=5
    )
    assert isinstance(fetch.desired(None, 1.0), ColumnSnapshot)


def test_a_refused_first_request_is_a_controller_error() -> None:
    server = _Controller(401, b'{"detail": "bad token"}')
    try:
        fetch = FirstSnapshot([server.url], "gw-1", lambda: "t", request_timeout=5)
        with pytest.raises(ControllerError, match="HTTP 401") as caught:
            fetch.desired(None, 1.0)
        assert caught.value.status == 401
        with pytest.raises(ControllerError, match="snapshot only"):
            fetch.desired(3, 1.0)
    finally:
        server.close()


def test_a_token_file_that_went_bad_is_a_controller_error(controller: _Controller) -> None:
    def token() -> str:
        raise OSError("gone")

    with pytest.raises(ControllerError, match="no usable token"):
        FirstSnapshot([controller.url], "gw-1", token).desired(None, 1.0)
    assert controller.requests == []


def test_the_first_snapshot_over_tls_trusts_the_configured_ca_only(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    key, cert = tmp_path / "controller.key", tmp_path / "ca.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=edgectl test controller",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    document = {"kind": "snapshot", "revision": policy_state.revision}
    body = json.dumps({**document, "state": state_to_data(policy_state)}).encode()
    server = _Controller(200, body, tls=context)
    try:
        trusted = FirstSnapshot([server.url], "gw-1", lambda: "t", ca_file=cert)
        answer = trusted.desired(None, 1.0)
        assert isinstance(answer, ColumnSnapshot) and answer.columns.state() == policy_state
        with pytest.raises(ControllerError, match="CERTIFICATE_VERIFY_FAILED"):
            FirstSnapshot([server.url], "gw-1", lambda: "t").desired(None, 1.0)
    finally:
        server.close()
