"""Jinja2 enters the controller here: the console's templates, from the package."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse


def _when(value: Any) -> str:
    """Times as the API gives them (RFC 3339), shortened to the second, in UTC."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        value = value.isoformat()
    text = str(value)
    return text[:19].replace("T", " ") + "Z" if len(text) >= 19 else text


def _query(params: dict[str, Any], **changes: Any) -> str:
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("edgectl.controller.console", "templates"),
        # Every value shown is someone's input (reasons, tickets, account ids).
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["query"] = _query
    return env


# Scripts, styles and forms from this origin only, and no framing: an
# injected <script> or inline handler would not run even if escaping failed.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class Pages:
    def __init__(self) -> None:
        self.env = environment()

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        body = self.env.get_template(name).render(**context)
        return HTMLResponse(body, status_code=status_code, headers={"content-security-policy": CSP})
