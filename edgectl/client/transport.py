"""HTTP to the controller (httpx enters the client here and nowhere else).

Every failure becomes a ``ClientError`` with its exit code: an error answer
is ``Refused`` with the API's own message (a 422 names the field), anything
that stopped the question reaching the controller -- refused connection,
timeout, TLS verification -- is ``Unreachable``.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from edgectl.client.config import ClientConfig
from edgectl.client.errors import Refused, Unreachable, UsageError

TIMEOUT = 30.0


def _field(item: dict[str, Any]) -> str:
    if isinstance(item.get("field"), str):
        return str(item["field"])
    loc = [str(part) for part in item.get("loc", ()) if part not in ("body",)]
    return ".".join(loc) or "request"


def error_message(response: httpx.Response) -> str:
    """The API's own words: ``field: why`` for a 422, its detail otherwise."""
    try:
        document = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    detail = document.get("detail") if isinstance(document, dict) else None
    if isinstance(detail, list):
        parts = [f"{_field(i)}: {i.get('msg')}" for i in detail if isinstance(i, dict)]
        return "; ".join(parts) or str(detail)
    if isinstance(detail, str):
        return detail
    return response.reason_phrase


class Api:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(config.ca_file))
            except (OSError, ssl.SSLError) as error:
                raise UsageError(f"--ca-file {config.ca_file}: {error}") from None
        headers = {"Accept": "application/json"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self._client = httpx.Client(
            base_url=config.url, headers=headers, verify=verify, timeout=TIMEOUT
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        if not self.config.token:
            raise UsageError("no token: set EDGECTL_TOKEN or put token in the client config file")
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(method, path, params=query, json=body)
        except httpx.ConnectError as error:
            if isinstance(error.__cause__, ssl.SSLError) or "SSL" in str(error):
                raise Unreachable(f"TLS failure talking to {self.config.url}: {error}") from None
            raise Unreachable(
                f"cannot reach the controller at {self.config.url}: {error}"
            ) from None
        except httpx.TimeoutException:
            raise Unreachable(f"the controller at {self.config.url} did not answer") from None
        except httpx.TransportError as error:
            raise Unreachable(
                f"cannot talk to the controller at {self.config.url}: {error}"
            ) from None
        if response.status_code >= 400:
            raise Refused(response.status_code, error_message(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
