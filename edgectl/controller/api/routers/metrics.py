"""/metrics: the controller's Prometheus endpoint, for a reader-role bearer token
(Prometheus: ``authorization: {credentials_file: …}``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from edgectl.controller import metrics
from edgectl.controller.api.deps import Reader, StoreDep
from edgectl.controller.store import strikes, telemetry

router = APIRouter(tags=["metrics"])


class PrometheusText(PlainTextResponse):
    media_type = metrics.CONTENT_TYPE


@router.get("/metrics", response_class=PrometheusText)
def scrape(request: Request, store: StoreDep, _: Reader) -> PrometheusText:
    """Per-gateway convergence and what agents reported; controller-wide counts;
    the RADIUS accounting feed when it listens."""
    radius = request.app.state.radius
    extra = []
    if radius is not None:
        extra = metrics.radius_families(radius.view(), radius.open_sessions())
    engine = request.app.state.escalation
    extra += metrics.escalation_families(strikes.counts(store), engine.leader, engine.passes)
    notifier = request.app.state.notifier
    extra += metrics.long_poll_families(notifier.parked(), notifier.listening)
    return PrometheusText(metrics.render(telemetry.snapshot(store), extra))
