"""One REST client for the tests, the lab and the benchmarks' set-up.

Standard library only (urllib), so it can open its socket inside a network
namespace: with ``netns`` set, each request's connection is made there (the
lab's controller namespace, the Ansible fleet's ops host) and keeps it.
JSON in, JSON out; an HTTP error status raises ``HttpError`` with the status
and the body the controller sent.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edgectl.lab import netns as lab_netns


class HttpError(AssertionError):
    """The server answered with an error status (an AssertionError: a test failure)."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Rest:
    """A controller's REST API at ``base_url`` with a bearer ``token``."""

    base_url: str
    token: str | None = None
    netns: str | None = None
    ssl_context: ssl.SSLContext | None = None
    timeout: float = 10.0

    @contextlib.contextmanager
    def _where(self) -> Iterator[None]:
        if self.netns is None:
            yield
            return
        with lab_netns.in_netns(self.netns):
            yield

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> str:
        """One call; the response body as text."""
        headers = {"Content-Type": content_type}
        bearer = token if token is not None else self.token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        handlers = (
            []
            if self.ssl_context is None
            else [urllib.request.HTTPSHandler(context=self.ssl_context)]
        )
        with self._where():
            # The connection's socket is made here, inside the namespace.
            opener = urllib.request.build_opener(*handlers)
            try:
                with opener.open(request, timeout=timeout or self.timeout) as response:
                    return str(response.read().decode())
            except urllib.error.HTTPError as error:
                body = error.read().decode(errors="replace")
                raise HttpError(method, path, error.code, body) from error

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        """A JSON call: ``body`` sent as JSON, the answer parsed (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        text = self.request(method, path, data, token=token)
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def healthy(self) -> bool:
        """``/healthz`` answers 200 (False while nothing listens or it errs)."""
        try:
            self.request("GET", "/healthz", token="", timeout=1.0)
        except (OSError, HttpError):
            return False
        return True
