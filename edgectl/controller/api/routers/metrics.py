"""/metrics: the controller's Prometheus endpoint, for a reader-role bearer token
(Prometheus: ``authorization: {credentials_file: …}``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from edgectl.controller import metrics
from edgectl.controller.api.deps import Reader, StoreDep
from edgectl.controller.store import telemetry

router = APIRouter(tags=["metrics"])


class PrometheusText(PlainTextResponse):
    media_type = metrics.CONTENT_TYPE


@router.get("/metrics", response_class=PrometheusText)
def scrape(store: StoreDep, _: Reader) -> PrometheusText:
    """Per-gateway convergence and what agents reported; controller-wide counts."""
    return PrometheusText(metrics.render(telemetry.snapshot(store)))
