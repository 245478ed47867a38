"""Prometheus text the agent serves."""

from __future__ import annotations

import urllib.request

from edgectl.agent.daemon.metrics import Metrics, policy_of
from edgectl.agent.daemon.metrics_http import MetricsServer


def test_render() -> None:
    clock = iter([100.0, 112.5])
    metrics = Metrics("gw-a", clock=lambda: next(clock))
    metrics.observe_apply("delta", 0.0004)
    metrics.observe_apply("delta", 0.03)
    metrics.synced(12)
    metrics.add("drift_repairs")
    text = metrics.render({"op25b_dyn4": (5, 300), "quarantine_smtp": (2, 120)})
    lines = set(text.splitlines())
    assert 'edgectl_agent_applied_revision{gateway="gw-a"} 12' in lines
    assert 'edgectl_agent_seconds_since_last_sync{gateway="gw-a"} 12.5' in lines
    assert 'edgectl_agent_drift_repairs_total{gateway="gw-a"} 1' in lines
    assert 'edgectl_agent_apply_seconds_bucket{gateway="gw-a",kind="delta",le="0.001"} 1' in lines
    assert 'edgectl_agent_apply_seconds_bucket{gateway="gw-a",kind="delta",le="0.05"} 2' in lines
    assert 'edgectl_agent_apply_seconds_bucket{gateway="gw-a",kind="delta",le="+Inf"} 2' in lines
    assert 'edgectl_agent_apply_seconds_count{gateway="gw-a",kind="delta"} 2' in lines
    assert (
        'edgectl_dropped_packets_total{gateway="gw-a",policy="op25b",counter="op25b_dyn4"} 5'
        in lines
    )
    assert "# TYPE edgectl_agent_apply_seconds histogram" in lines
    assert text.endswith("\n")


def test_offender_metrics() -> None:
    metrics = Metrics("gw-a")
    metrics.set_offenders(42)
    metrics.add("nflog_overruns", 3)
    metrics.add("nflog_lost_events", 250)
    lines = set(metrics.render({}).splitlines())
    assert "# TYPE edgectl_agent_offenders gauge" in lines
    assert 'edgectl_agent_offenders{gateway="gw-a"} 42' in lines
    assert "# TYPE edgectl_agent_nflog_overruns_total counter" in lines
    assert 'edgectl_agent_nflog_overruns_total{gateway="gw-a"} 3' in lines
    assert 'edgectl_agent_nflog_lost_events_total{gateway="gw-a"} 250' in lines


def test_never_synced() -> None:
    text = Metrics("gw-a").render({})
    assert 'edgectl_agent_applied_revision{gateway="gw-a"} -1' in text
    assert 'edgectl_agent_seconds_since_last_sync{gateway="gw-a"} -1' in text


def test_policy_names() -> None:
    assert policy_of("rate_residential") == "rate_limit"
    assert policy_of("concurrent_residential") == "concurrency_limit"
    assert policy_of("destination_residential") == "destination_limit"
    assert policy_of("quarantine_walled_garden") == "quarantine"


def test_server_serves_metrics_even_when_the_kernel_read_fails() -> None:
    def broken() -> dict[str, tuple[int, int]]:
        raise OSError("netlink gone")

    server = MetricsServer(("127.0.0.1", 0), Metrics("gw-a"), broken)
    server.start()
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "edgectl_agent_applied_revision" in body
    finally:
        server.close()
