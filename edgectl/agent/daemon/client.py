"""The controller, seen from the agent: the only module that talks HTTP (and imports httpx).

Two calls: ``desired(since, wait, epoch)`` (snapshot or delta,
long-polled) and ``report(...)`` (applied revision, detail, offenders).

Several controller URLs (processes sharing one database) are tried in
order: the agent stays with the one that last answered, and when it stops
answering (connection refused or reset, a silent peer found out by TCP
keepalive, a timeout, a 5xx) the same request goes to the next one at once,
after a random pause of up to ``failover_jitter`` so that a fleet whose
controller died together does not arrive together.  The cursor is the
agent's, so the next controller continues with a delta.  Only when every
URL failed does the caller see the error (and back off, with jitter).  Every failure --
refused connection, timeout, 5xx, 401/403, a body that is not a valid
state -- becomes ``ControllerError``, because the agent's answer to all of
them is the same: keep enforcing what it has, back off, try again.  A
status report the controller refuses (422) is the exception worth a word:
its detail is logged here, once, because it will not go away by retrying.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from edgectl.agent.daemon.protocol import Answer, ControllerError, parse_answer

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("edgectl.agent")

# What a controller that predates the offenders section answers for it: its
# StatusReport forbids unknown fields (pydantic extra="forbid").
_UNKNOWN_OFFENDERS = {"type": "extra_forbidden", "loc": ["body", "offenders"]}
# Distinct refusals remembered as already logged: bounded, so that a
# refusal whose text varies (a revision, a time) cannot grow the set.
_REFUSALS_KEPT = 32
# Characters of a refusal's detail put in the log.
_DETAIL_SHOWN = 1000
# With several controllers, the longest wait for a TCP connection before the
# next one is tried: a blackholed controller must not eat the 5 s fail-over.
_FAILOVER_CONNECT = 2.0
# A parked long-poll sends nothing for poll_wait seconds; keepalive probes
# after 2 s idle, every 1 s, 2 unanswered -> a controller host that vanished
# (power, partition) fails the request in about 4 s instead of poll_wait +
# request_timeout.  A process that died is seen at once (the kernel resets).
_KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2),
]


def _authorization(token: Callable[[], str]) -> dict[str, str]:
    """The bearer header, read fresh each request (the token file may be
    rotated); a token file that went bad is one more failure, not a crash."""
    try:
        return {"Authorization": f"Bearer {token()}"}
    except Exception as error:
        raise ControllerError(f"no usable token: {error}") from None


def _unavailable(error: ControllerError) -> bool:
    """The controller did not answer (no status) or failed itself (5xx): try another."""
    return error.status is None or error.status >= 500


def _detail(response: httpx.Response) -> Any:
    try:
        document = response.json()
    except ValueError:
        return None
    return document.get("detail") if isinstance(document, dict) else None


def _offenders_unknown(error: ControllerError) -> bool:
    """True only for the 422 of a controller that does not know the ``offenders`` field.

    Any other 422 (a value it refuses) would come back just the same without
    the section fixed; taking it for an old controller would hide the reason.
    """
    if error.status != 422 or not isinstance(error.detail, list):
        return False
    return any(
        isinstance(item, dict)
        and item.get("type") == _UNKNOWN_OFFENDERS["type"]
        and item.get("loc") == _UNKNOWN_OFFENDERS["loc"]
        for item in error.detail
    )


def _offenders_only(error: ControllerError) -> bool:
    """True for a 422 whose every complaint is inside the ``offenders`` section."""
    if error.status != 422 or not isinstance(error.detail, list) or not error.detail:
        return False
    return all(
        isinstance(item, dict) and list(item.get("loc", ()))[:2] == ["body", "offenders"]
        for item in error.detail
    )


def _refusal_text(error: ControllerError) -> str:
    """A 422's detail for the log: ``offenders.entries.3.first_seen: is after last_seen``."""
    detail = error.detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = item.get("loc")
            where = ".".join(str(p) for p in loc) if isinstance(loc, list) else "?"
            parts.append(f"{where.removeprefix('body.')}: {item.get('msg') or item.get('type')}")
        text = "; ".join(parts)
    elif detail is not None:
        text = str(detail)
    else:
        text = str(error)
    return text[:_DETAIL_SHOWN].replace("\n", " ")


class ControllerClient:
    """One gateway's view of the controller API over a kept-alive connection."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        gateway: str,
        token: Callable[[], str],
        *,
        request_timeout: float = 10.0,
        ca_file: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        failover_jitter: float = 0.5,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.gateway = gateway
        # Read per request, so a token rotated on disk is picked up without a restart.
        self._token = token
        self._request_timeout = request_timeout
        self.urls = (base_url,) if isinstance(base_url, str) else tuple(base_url)
        if not self.urls:
            raise ValueError("no controller URL")
        self._connect_timeout = (
            min(request_timeout, _FAILOVER_CONNECT) if len(self.urls) > 1 else request_timeout
        )
        self._failover_jitter = failover_jitter
        self._rng = rng
        self._sleep = sleep
        # Imported here, not at the top: 0.1-0.2 s that a cold start's first
        # snapshot does not wait for (FirstSnapshot).
        import httpx

        verify: bool | str = str(ca_file) if ca_file is not None else True
        self._https = [
            httpx.Client(
                base_url=url,
                timeout=httpx.Timeout(request_timeout),
                headers={"User-Agent": "edgectl-agent"},
                # The controller is configured explicitly; an environment proxy
                # would be a surprise in the long-poll path.
                trust_env=False,
                # tests hand in httpx.MockTransport
                transport=transport
                or httpx.HTTPTransport(verify=verify, trust_env=False, socket_options=_KEEPALIVE),
            )
            for url in self.urls
        ]
        # The controller that answered last: every request starts there.
        self.active = 0
        # Refusals (422) of status reports already logged: the loop reports
        # every few seconds, and the same bad field would flood the log.
        self._refusals_logged: set[str] = set()

    @property
    def active_url(self) -> str:
        return self.urls[self.active]

    def close(self) -> None:
        for session in self._https:
            session.close()

    def _call(self, method: str, path: str, timeout: float, **kwargs: Any) -> httpx.Response:
        headers = _authorization(self._token)
        start = self.active
        count = len(self.urls)
        failed: ControllerError | None = None
        for step in range(count):
            index = (start + step) % count
            if step:
                self._sleep(self._rng() * self._failover_jitter)
            try:
                response = self._call_one(index, method, path, timeout, headers, **kwargs)
            except ControllerError as error:
                if not _unavailable(error):
                    raise  # it answered: another process of the same database would too
                failed = error
                continue
            if index != self.active:
                log.warning(
                    "controller %s answers; moved from %s (%s)",
                    self.urls[index],
                    self.urls[self.active],
                    failed,
                )
                self.active = index
            return response
        assert failed is not None
        if count > 1:
            raise ControllerError(
                f"no controller answers ({count} tried; last: {failed})", status=failed.status
            )
        raise failed

    def _call_one(
        self,
        index: int,
        method: str,
        path: str,
        timeout: float,
        headers: dict[str, str],
        **kwargs: Any,
    ) -> httpx.Response:
        import httpx  # loaded by __init__ already

        try:
            response = self._https[index].request(
                method,
                path,
                headers=headers,
                timeout=httpx.Timeout(
                    self._request_timeout, connect=self._connect_timeout, read=timeout
                ),
                **kwargs,
            )
        except httpx.HTTPError as error:
            raise ControllerError(f"{method} {path}: {type(error).__name__}: {error}") from None
        if response.status_code >= 300:
            text = response.text[:300].replace("\n", " ")
            raise ControllerError(
                f"{method} {path}: HTTP {response.status_code}: {text}",
                status=response.status_code,
                detail=_detail(response),
            )
        return response

    def desired(self, since: int | None, wait: float, epoch: str | None = None) -> Answer:
        params: dict[str, Any] = {"wait": wait}
        if since is not None:
            params["since"] = since
            if epoch is not None:
                params["epoch"] = epoch
        response = self._call(
            "GET",
            f"/v1/gateways/{self.gateway}/desired-state",
            wait + self._request_timeout,
            params=params,
        )
        try:
            document = response.json()
        except ValueError as error:
            raise ControllerError(f"desired-state answer is not JSON: {error}") from None
        return parse_answer(document)

    def report(
        self,
        applied_revision: int,
        detail: dict[str, Any],
        offenders: dict[str, Any] | None = None,
    ) -> bool:
        """POST the status report; False if the controller only took it without ``offenders``.

        A controller older than the offenders section refuses the unknown
        field (HTTP 422, ``extra_forbidden`` at ``body.offenders``); the report
        is then sent again without it, so that convergence stays visible while
        agents are upgraded first.  A 422 about the section's contents is
        logged (once per distinct detail, since the loop only logs failed
        reports at debug level) and the report sent without it too.  Any
        other failure is raised.
        """
        body: dict[str, Any] = {"applied_revision": applied_revision, "detail": detail}
        if offenders is None:
            self._post_status(body)
        else:
            try:
                self._post_status({**body, "offenders": offenders})
            except ControllerError as error:
                if not _offenders_only(error):  # an older controller's refusal too
                    raise
                # Only the offenders section is in the way (its refusal, if
                # not the old-controller one, is logged): the rest of the
                # report still goes, so convergence stays visible.
                self._post_status(body)
                return False
        # The whole report was taken: a refusal seen again later is news again.
        self._refusals_logged.clear()
        return True

    def _post_status(self, body: dict[str, Any]) -> None:
        path = f"/v1/gateways/{self.gateway}/status"
        try:
            self._call("POST", path, self._request_timeout, json=body)
        except ControllerError as error:
            if error.status == 422 and not _offenders_unknown(error):
                self._log_refusal(error)
            raise

    def _log_refusal(self, error: ControllerError) -> None:
        text = _refusal_text(error)
        if text in self._refusals_logged:
            return
        if len(self._refusals_logged) >= _REFUSALS_KEPT:
            self._refusals_logged.clear()
        self._refusals_logged.add(text)
        log.error("controller refused the status report (HTTP 422): %s", text)


class FirstSnapshot:
    """A cold start's first request (no cursor) over the standard library.

    Importing httpx costs 0.1-0.2 s, a third of a 50k-key cold start's
    budget, and the first snapshot needs none of what it brings (kept
    connections, fail-over state): one GET, the same URLs in order, the same
    token, CA file and timeouts.  Any failure is a ControllerError, and the
    agent's loop then asks again through ``ControllerClient``.
    """

    def __init__(
        self,
        urls: Sequence[str],
        gateway: str,
        token: Callable[[], str],
        *,
        request_timeout: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        self.urls = tuple(urls)
        self.gateway = gateway
        self._token = token
        self._timeout = request_timeout
        self._ca_file = ca_file

    def desired(self, since: int | None, wait: float, epoch: str | None = None) -> Answer:
        if since is not None:
            raise ControllerError("the first request asks for a snapshot only")
        headers = {
            **_authorization(self._token),
            "User-Agent": "edgectl-agent",
            "Accept": "application/json",
        }
        query = urlencode({"wait": float(wait)})
        failed: ControllerError | None = None
        for url in self.urls:
            try:
                body = self._get(url, f"/v1/gateways/{self.gateway}/desired-state?{query}", headers)
            except ControllerError as error:
                if not _unavailable(error):
                    raise  # it answered: another process of the same database would too
                failed = error
                continue
            try:
                document = json.loads(body)
            except ValueError as error:
                raise ControllerError(f"desired-state answer is not JSON: {error}") from None
            return parse_answer(document, columns=True)
        assert failed is not None
        raise failed

    def _get(self, url: str, path: str, headers: dict[str, str]) -> bytes:
        parts = urlsplit(url)
        connection: http.client.HTTPConnection
        try:
            if parts.scheme == "https":
                context = ssl.create_default_context(
                    cafile=None if self._ca_file is None else str(self._ca_file)
                )
                connection = http.client.HTTPSConnection(
                    parts.hostname or "", parts.port, timeout=self._timeout, context=context
                )
            elif parts.scheme == "http":
                connection = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=self._timeout
                )
            else:
                raise ControllerError(f"unsupported URL scheme {parts.scheme!r}")
            try:
                connection.request("GET", parts.path.rstrip("/") + path, headers=headers)
                response = connection.getresponse()
                body = response.read()
            finally:
                connection.close()
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise ControllerError(f"GET {url}{path}: {type(error).__name__}: {error}") from None
        if response.status != 200:
            text = body[:300].decode(errors="replace").replace("\n", " ")
            raise ControllerError(
                f"GET {url}{path}: HTTP {response.status}: {text}", status=response.status
            )
        return body

    def report(
        self, applied_revision: int, detail: dict[str, Any], offenders: dict[str, Any] | None = None
    ) -> bool:
        raise ControllerError("the first request asks for a snapshot only")
