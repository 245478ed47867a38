"""The agent's decisions, driven with a fake kernel, controller and disk (no root, no I/O)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import pytest

from edgectl.agent.apply import ApplyResult
from edgectl.agent.daemon.backoff import Backoff
from edgectl.agent.daemon.kernel import Commit
from edgectl.agent.daemon.loop import Agent, LoopSettings
from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.daemon.protocol import Answer, ControllerError, Delta, Snapshot
from edgectl.agent.nft import NftError
from edgectl.agent.persist import Applied, PersistError, Step
from edgectl.agent.restore_payload import Payload
from edgectl.model import DesiredState, Prefix, Quarantine, QuarantineMode
from edgectl.model.delta import StateDelta, diff, patch

GATEWAY = "gw-tokyo-1"


class FakeKernel:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.expected: int | None = None
        self.suspect = False
        self.gen = 1
        self.table: DesiredState | None = None
        self.commits: list[str] = []
        self.refuse_delta: Exception | None = None
        self.refuse_full = False
        self.drift_lines: list[str] = []

    def generation(self) -> int:
        return self.gen

    def _commit(self, kind: str, state: DesiredState) -> Commit:
        self.gen += 1
        self.expected = self.gen
        self.table = state
        self.commits.append(kind)
        return Commit(ApplyResult(kind, state.revision, 0.001, 10), self.gen)

    def full_sync(self, state: DesiredState) -> Commit:
        if self.refuse_full:
            raise NftError("Error: refused")
        self.suspect = False
        return self._commit("full", state)

    def apply_delta(self, old: DesiredState, delta: StateDelta) -> Commit:
        assert delta.structure is None
        if self.refuse_delta is not None:
            raise self.refuse_delta
        return self._commit("delta", patch(old, delta))

    def restore_payload(self, payload: Payload) -> Commit:
        raise AssertionError("FakeStore has no payload")

    def cut_held(self, state: DesiredState) -> None:
        pass

    def drift(self, applied: Applied) -> list[str]:
        return list(self.drift_lines)

    def counters(self) -> dict[str, tuple[int, int]]:
        return {"quarantine_smtp": (3, 180)}

    def foreign_commit(self, *, wipe: bool = False) -> None:
        self.gen += 1
        if wipe:
            self.table = None


class FakeController:
    def __init__(self, *answers: Answer | ControllerError) -> None:
        self.answers = list(answers)
        self.asked: list[int | None] = []
        self.epochs: list[str | None] = []
        self.reports: list[tuple[int, dict[str, object]]] = []
        self.offenders: list[dict[str, object] | None] = []

    def desired(self, since: int | None, wait: float, epoch: str | None = None) -> Answer:
        self.asked.append(since)
        self.epochs.append(epoch)
        answer = self.answers.pop(0)
        if isinstance(answer, ControllerError):
            raise answer
        return answer

    def report(
        self,
        applied_revision: int,
        detail: dict[str, object],
        offenders: dict[str, object] | None = None,
    ) -> bool:
        self.reports.append((applied_revision, detail))
        self.offenders.append(offenders)
        return True


class FakeOffenders:
    """What the agent hands the offender listener, and a fixed report section."""

    def __init__(self) -> None:
        self.followed: list[DesiredState] = []

    def follow(self, state: DesiredState) -> None:
        self.followed.append(state)

    def report(self) -> dict[str, object]:
        return {"available": True, "reason": None, "window_seconds": 900, "entries": []}

    def run_forever(self, stop: threading.Event) -> None:
        stop.wait()


class FakeStore:
    def __init__(self, persisted: Applied | PersistError | None = None) -> None:
        self.persisted = persisted
        self.saved: list[tuple[int, int | None]] = []
        self.deltas: list[StateDelta | None] = []
        self.batches = 0

    def load(self) -> Applied | None:
        if isinstance(self.persisted, PersistError):
            raise self.persisted
        return self.persisted

    def load_payload(self) -> Payload | None:
        return None  # the payload path is tested with a real store (test_restore_payload.py)

    def record(self, steps: Sequence[Step], newest: DesiredState) -> None:
        self.batches += 1
        for step in steps:
            # A step without a delta is a snapshot of ``newest``.
            revision = newest.revision if step.delta is None else step.delta.to_revision
            self.saved.append((revision, step.generation))
            self.deltas.append(step.delta)
        self.persisted = Applied(newest, steps[-1].generation, steps[-1].epoch)


def quarantined(state: DesiredState, revision: int, *keys: str) -> DesiredState:
    entries = {
        Prefix.parse(k): Quarantine(Prefix.parse(k), QuarantineMode.SMTP, account=f"acct-{k}")
        for k in keys
    }
    return replace(state, revision=revision, quarantines={**state.quarantines, **entries})


def make_agent(
    controller: FakeController, store: FakeStore | None = None
) -> tuple[Agent, FakeKernel, FakeStore]:
    kernel = FakeKernel()
    store = store or FakeStore()
    agent = Agent(
        LoopSettings.defaults(GATEWAY, poll_wait=5),
        kernel,
        controller,
        store,
        Metrics(GATEWAY),
        backoff=Backoff(0.1, 1.0, rng=lambda: 0.5),
    )
    return agent, kernel, store


@pytest.fixture
def base(policy_state: DesiredState) -> DesiredState:
    return replace(policy_state, revision=7)


def test_restore_applies_the_persisted_state_before_asking_the_controller(
    base: DesiredState,
) -> None:
    controller = FakeController()
    agent, kernel, store = make_agent(controller, FakeStore(Applied(base, 40)))
    assert agent.restore()
    assert kernel.table == base and kernel.commits == ["full"]
    assert controller.asked == []  # nobody asked yet
    assert agent.cursor == 7
    assert store.saved == [(7, kernel.gen)]  # re-saved with the new generation ...
    assert store.deltas == [StateDelta(GATEWAY, 7, 7)]  # ... as a journal line, not the state


@pytest.mark.parametrize(
    "persisted",
    [PersistError("applied.json: refusing persisted state: schema 99"), None],
)
def test_unusable_or_missing_state_file_applies_nothing(
    base: DesiredState, persisted: PersistError | None, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController(Snapshot(7, base))
    agent, kernel, _ = make_agent(controller, FakeStore(persisted))
    assert not agent.restore()
    assert kernel.commits == []
    if persisted is not None:
        assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
            "applied.json: refusing persisted state: schema 99; nothing applied from it, "
            "waiting for the controller's snapshot"
        ]
    assert agent.sync_once()
    assert controller.asked == [None]  # a snapshot, not a delta
    assert kernel.table == base


def test_persisted_state_of_another_gateway_is_not_applied(base: DesiredState) -> None:
    other = replace(base, gateway="somewhere-else")
    agent, kernel, _ = make_agent(FakeController(), FakeStore(Applied(other, 3)))
    assert not agent.restore()
    assert kernel.commits == []


def test_snapshot_then_deltas_advance_the_cursor_after_each_apply(base: DesiredState) -> None:
    r8 = quarantined(base, 8, "100.64.0.20")
    r9 = quarantined(r8, 9, "100.64.0.21")
    controller = FakeController(Snapshot(7, base), Delta(8, diff(base, r8)), Delta(9, diff(r8, r9)))
    agent, kernel, store = make_agent(controller)
    for _ in range(3):
        assert agent.sync_once()
    assert controller.asked == [None, 7, 8]
    assert kernel.commits == ["full", "delta", "delta"]
    assert kernel.table == r9
    assert [revision for revision, _ in store.saved] == [7, 8, 9]
    assert agent.metrics.applied_revision == 9


def test_a_delta_that_does_not_follow_asks_for_a_snapshot(base: DesiredState) -> None:
    r8 = quarantined(base, 8, "100.64.0.20")
    r9 = quarantined(r8, 9, "100.64.0.21")
    controller = FakeController(Snapshot(7, base), Delta(9, diff(r8, r9)), Snapshot(9, r9))
    agent, kernel, _store = make_agent(controller)
    assert agent.sync_once()
    assert agent.sync_once()
    assert kernel.commits == ["full"]  # the stray delta touched nothing
    assert agent.cursor is None
    assert agent.sync_once()
    assert controller.asked == [None, 7, None]
    assert kernel.table == r9


def test_structural_delta_is_a_full_sync(base: DesiredState) -> None:
    r8 = replace(base, revision=8, relays=())
    controller = FakeController(Snapshot(7, base), Delta(8, diff(base, r8)))
    agent, kernel, _ = make_agent(controller)
    agent.sync_once()
    agent.sync_once()
    assert kernel.commits == ["full", "full"]
    assert kernel.table == r8


@pytest.mark.parametrize(
    "error",
    [NftError("Error: No such file or directory"), OverflowError("attribute too long")],
)
def test_a_delta_that_fails_falls_back_to_a_full_sync(base: DesiredState, error: Exception) -> None:
    r8 = quarantined(base, 8, "100.64.0.20")
    r9 = quarantined(r8, 9, "100.64.0.21")
    controller = FakeController(Snapshot(7, base), Delta(8, diff(base, r8)), Snapshot(9, r9))
    agent, kernel, _ = make_agent(controller)
    agent.sync_once()
    kernel.refuse_delta = error
    assert agent.sync_once()
    assert kernel.commits == ["full", "full"]
    assert kernel.table == r8
    assert agent.sync_once()  # a snapshot on an untouched kernel takes the element path too
    assert kernel.commits == ["full", "full", "full"]
    assert kernel.table == r9


def test_refused_apply_keeps_cursor_and_disk(base: DesiredState) -> None:
    r8 = replace(base, revision=8, relays=())
    controller = FakeController(Snapshot(7, base), Delta(8, diff(base, r8)))
    agent, kernel, store = make_agent(controller)
    agent.sync_once()
    kernel.refuse_full = True
    kernel.refuse_delta = NftError("refused")
    assert not agent.sync_once()
    assert agent.cursor == 7
    assert kernel.table == base
    assert [revision for revision, _ in store.saved] == [7]
    assert agent.metrics.apply_failures == 1


def test_controller_errors_leave_the_kernel_alone(base: DesiredState) -> None:
    controller = FakeController(
        Snapshot(7, base), ControllerError("ConnectError"), ControllerError("HTTP 503")
    )
    agent, kernel, _ = make_agent(controller)
    agent.sync_once()
    assert not agent.sync_once()
    assert not agent.sync_once()
    assert kernel.commits == ["full"] and kernel.table == base
    assert agent.cursor == 7
    assert agent.metrics.controller_errors == 2
    assert not agent.metrics.controller_reachable


def test_long_poll_timeout_changes_nothing(base: DesiredState) -> None:
    controller = FakeController(Snapshot(7, base), Delta(7, diff(base, base)))
    agent, kernel, store = make_agent(controller)
    agent.sync_once()
    assert agent.sync_once()
    assert kernel.commits == ["full"]
    assert len(store.saved) == 1


def test_same_snapshot_again_commits_nothing(base: DesiredState) -> None:
    controller = FakeController(Snapshot(7, base), Snapshot(7, base))
    agent, kernel, _ = make_agent(controller)
    agent.sync_once()
    agent.sync_once()
    assert kernel.commits == ["full"]


def test_snapshot_on_an_untouched_kernel_goes_in_as_elements(base: DesiredState) -> None:
    r8 = quarantined(base, 8, "100.64.0.20")
    controller = FakeController(Snapshot(7, base), Snapshot(8, r8))
    agent, kernel, _ = make_agent(controller)
    agent.sync_once()
    agent.sync_once()
    assert kernel.commits == ["full", "delta"]
    assert kernel.table == r8


def test_snapshot_after_a_foreign_commit_is_a_full_sync(base: DesiredState) -> None:
    r8 = quarantined(base, 8, "100.64.0.20")
    controller = FakeController(Snapshot(7, base), Snapshot(8, r8))
    agent, kernel, _ = make_agent(controller)
    agent.sync_once()
    kernel.foreign_commit()
    agent.sync_once()
    assert kernel.commits == ["full", "full"]


def test_controller_behind_us_is_the_truth(
    base: DesiredState, caplog: pytest.LogCaptureFixture
) -> None:
    r9 = quarantined(base, 9, "100.64.0.20")
    restored = replace(base, revision=5)
    controller = FakeController(Snapshot(9, r9), Snapshot(5, restored))
    agent, kernel, _ = make_agent(controller)
    agent.sync_once()
    assert agent.sync_once()
    assert kernel.table == restored
    assert agent.cursor == 5
    assert "database restored?" in caplog.text


def test_drift_check_only_after_a_foreign_commit(base: DesiredState) -> None:
    agent, kernel, _ = make_agent(FakeController(Snapshot(7, base)))
    assert not agent.check_drift()  # nothing applied yet: nothing to guard
    agent.sync_once()
    assert not agent.check_drift()
    assert agent.metrics.drift_checks == 0  # our own commit is not drift
    kernel.foreign_commit()  # another tool's table
    assert not agent.check_drift()
    assert agent.metrics.drift_checks == 1 and agent.metrics.drift_repairs == 0
    assert kernel.expected == kernel.gen  # accepted: no re-check next round
    assert not agent.check_drift()
    assert agent.metrics.drift_checks == 1


def test_drift_is_repaired_and_counted(base: DesiredState) -> None:
    agent, kernel, store = make_agent(FakeController(Snapshot(7, base)))
    agent.sync_once()
    kernel.foreign_commit(wipe=True)
    kernel.drift_lines = ["table inet edgectl: missing"]
    assert agent.check_drift()
    assert kernel.table == base
    assert kernel.commits == ["full", "full"]
    assert agent.metrics.drift_repairs == 1
    assert store.saved[-1] == (7, kernel.gen)
    detail = agent.status_detail()
    assert detail["last_drift"] == ["table inet edgectl: missing"]
    assert detail["drift_repairs"] == 1


def test_foreign_commit_hidden_behind_our_delta_is_still_checked(base: DesiredState) -> None:
    r8 = quarantined(base, 8, "100.64.0.20")
    agent, kernel, _ = make_agent(FakeController(Snapshot(7, base), Delta(8, diff(base, r8))))
    agent.sync_once()
    kernel.foreign_commit()
    kernel.suspect = True  # what the real Kernel sets when its commit sees a foreign gen
    agent.sync_once()
    assert kernel.generation() == kernel.expected
    agent.check_drift()
    assert agent.metrics.drift_checks == 1


def test_status_report_carries_revision_counters_and_offenders(base: DesiredState) -> None:
    controller = FakeController(Snapshot(7, base))
    agent, _, _ = make_agent(controller)
    assert not agent.report_once()  # nothing applied: nothing to report
    agent.sync_once()
    assert agent.report_once()
    revision, detail = controller.reports[-1]
    assert revision == 7
    assert detail["counters"] == {
        "quarantine_smtp": {"policy": "quarantine", "packets": 3, "bytes": 180}
    }
    assert detail["last_apply"]["kind"] == "full"  # type: ignore[index]
    # Offenders are a section of the report of their own, not part of detail.
    assert "offenders" not in detail
    assert controller.offenders[-1] is None  # no listener: the section is left out


def test_every_state_put_in_force_goes_to_the_offender_listener(base: DesiredState) -> None:
    r8 = quarantined(base, 8, "100.64.0.20")
    controller = FakeController(Snapshot(7, base), Delta(8, diff(base, r8)))
    offenders = FakeOffenders()
    agent = Agent(
        LoopSettings.defaults(GATEWAY),
        FakeKernel(),
        controller,
        FakeStore(Applied(base, 3)),
        Metrics(GATEWAY),
        offenders=offenders,
    )
    agent.restore()
    agent.sync_once()  # the same state again: nothing committed, nothing new to follow
    agent.sync_once()
    assert [state.revision for state in offenders.followed] == [7, 8]
    assert agent.report_once()
    assert controller.offenders[-1] == offenders.report()
    assert "agent-offenders" in {thread.name for thread in agent.threads()}


def test_a_controller_that_refuses_the_offenders_section_is_reported_to_without_it(
    base: DesiredState, caplog: pytest.LogCaptureFixture
) -> None:
    class OldController(FakeController):
        def report(
            self,
            applied_revision: int,
            detail: dict[str, object],
            offenders: dict[str, object] | None = None,
        ) -> bool:
            super().report(applied_revision, detail, offenders)
            return False

    controller = OldController(Snapshot(7, base))
    agent, _, _ = make_agent(controller)
    agent.sync_once()
    with caplog.at_level("WARNING", logger="edgectl.agent"):
        assert agent.report_once()
        assert agent.report_once()
    warnings = [r for r in caplog.records if "refused the offenders section" in r.message]
    assert len(warnings) == 1  # said once, not every report


def test_backoff_grows_with_jitter_and_resets() -> None:
    low = Backoff(0.5, 8.0, rng=lambda: 0.0)
    high = Backoff(0.5, 8.0, rng=lambda: 0.999999)
    lows = [low.next_delay() for _ in range(7)]
    highs = [high.next_delay() for _ in range(7)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(h == pytest.approx(2 * lo, rel=1e-5) for lo, h in zip(lows, highs, strict=True))
    low.reset()
    assert low.next_delay() == 0.25


def test_background_persister_writes_everything_in_order_in_one_go(base: DesiredState) -> None:
    r8 = quarantined(base, 8, "100.64.0.20")
    r9 = quarantined(r8, 9, "100.64.0.21")
    controller = FakeController(Snapshot(7, base), Delta(8, diff(base, r8)), Delta(9, diff(r8, r9)))
    kernel = FakeKernel()
    store = FakeStore()
    agent = Agent(
        LoopSettings.defaults(GATEWAY),
        kernel,
        controller,
        store,
        Metrics(GATEWAY),
        persist_in_background=True,
    )
    for _ in range(3):
        agent.sync_once()
    assert store.saved == []  # the apply path never waited for the disk
    agent.persister.flush()
    # One write for all three, in order: the snapshot, then the two deltas
    # (each journalled against the one before it).
    assert store.batches == 1
    assert store.deltas == [None, diff(base, r8), diff(r8, r9)]
    assert isinstance(store.persisted, Applied) and store.persisted.state == r9


# -- the store epoch in the cursor ------------------------------------------------


def test_the_cursor_carries_the_epoch_and_it_survives_a_restart(base: DesiredState) -> None:
    later = quarantined(base, 9, "100.64.0.1")
    controller = FakeController(
        Snapshot(7, base, "e1"), Delta(9, diff(base, later), "e1"), ControllerError("down")
    )
    agent, _, store = make_agent(controller)
    assert agent.sync_once() and agent.sync_once()
    assert not agent.sync_once()
    assert controller.asked == [None, 7, 9]
    assert controller.epochs == [None, "e1", "e1"]
    assert isinstance(store.persisted, Applied) and store.persisted.epoch == "e1"
    # A restarted agent asks from its persisted cursor, epoch included.
    again = FakeController(ControllerError("down"))
    restarted, _, _ = make_agent(again, store)
    assert restarted.restore()
    assert not restarted.sync_once()
    assert again.asked == [9] and again.epochs == ["e1"]


def test_a_snapshot_of_a_new_epoch_is_persisted_as_a_snapshot_even_if_unchanged(
    base: DesiredState,
) -> None:
    controller = FakeController(Snapshot(7, base, "e1"), Snapshot(7, base, "e2"))
    agent, kernel, store = make_agent(controller)
    assert agent.sync_once()
    assert agent.sync_once()
    assert kernel.commits == ["full"]  # nothing new for the kernel ...
    assert agent.epoch == "e2"
    assert store.deltas[-1] is None  # ... but the disk now says e2, as a snapshot
    assert isinstance(store.persisted, Applied) and store.persisted.epoch == "e2"


def test_a_delta_of_another_epoch_is_not_applied(base: DesiredState) -> None:
    later = quarantined(base, 9, "100.64.0.1")
    controller = FakeController(Snapshot(7, base, "e1"), Delta(9, diff(base, later), "e2"))
    agent, kernel, _ = make_agent(controller)
    assert agent.sync_once()
    agent.sync_once()
    assert kernel.table == base
    assert agent.cursor is None  # the next request asks for a snapshot
