"""Posting one alert to one sink: rate-limited per sink, retried with backoff.

Retries follow what chat services ask of webhook callers: 429 and 5xx answers and
network failures are retried with exponential backoff and full jitter, waiting at
least as long as a ``Retry-After`` header says; any other 4xx is final (the payload
or URL is wrong, and sending it again will not help). Each sink also keeps a
minimum interval between posts (Slack allows about one message a second per
webhook), so a burst of alerts is spread out rather than refused.

Each post goes through ``service.outbound``: a bounded reply, one deadline per post,
the proxy and CA from the environment. Sinks may be private (an Alertmanager inside
the network, per the contract), so alerts are not held to forwarding's egress rule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import orjson
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
)
from tenacity.wait import wait_base

from service.alerts.model import Alert
from service.alerts.payloads import BUILDERS
from service.alerts.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, Sink, sign
from service.outbound import DEADLINE_S, Outbound, OutboundFailed, retry_after_seconds
from service.outbound import backoff_s as backoff_wait_s

__all__ = ["Deliverer", "FinalDeliveryError", "RetryableDeliveryError", "retry_after_seconds"]

log = structlog.get_logger(__name__)

# Seconds between two posts to one sink.
MIN_INTERVAL_S: dict[str, float] = {"slack": 1.0, "discord": 0.5, "googlechat": 1.0, "teams": 1.0}


class RetryableDeliveryError(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class FinalDeliveryError(Exception):
    """The sink refused the alert in a way that retrying cannot fix."""


class _WaitHonouringRetryAfter(wait_base):
    """Tenacity's wait, the same as forwarding's (``service.outbound.backoff_s``)."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self._base_s = base_s
        self._cap_s = cap_s

    def __call__(self, retry_state) -> float:  # type: ignore[no-untyped-def]
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = error.retry_after_s if isinstance(error, RetryableDeliveryError) else None
        return backoff_wait_s(
            retry_state.attempt_number, self._base_s, self._cap_s, retry_after, self._cap_s
        )


class Deliverer:
    def __init__(
        self,
        client: Outbound | httpx.AsyncClient,
        *,
        secret: bytes | None = None,
        deadline_s: float = DEADLINE_S,
        attempts: int = 6,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        min_interval_s: dict[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Private sinks allowed (an Alertmanager); a plain client (tests, tools) still
        # gets the deadline and the bounded read.
        self._client = (
            client
            if isinstance(client, Outbound)
            else Outbound.over(client, allow_private=True, deadline_s=deadline_s)
        )
        self._secret = secret
        self._attempts = attempts
        self._wait = _WaitHonouringRetryAfter(backoff_s, max_wait_s)
        self._min_interval_s = MIN_INTERVAL_S if min_interval_s is None else min_interval_s
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._next_post: dict[str, float] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, sink: Sink, alert: Alert) -> None:
        """Post ``alert`` to ``sink``; raises when it could not be delivered."""
        body = orjson.dumps(BUILDERS[sink.kind](alert))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableDeliveryError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._post_paced(sink, alert, body)

    async def _post_paced(self, sink: Sink, alert: Alert, body: bytes) -> None:
        # Per webhook, not per host: Slack's limit is per incoming webhook, and two
        # channels' webhooks should not queue behind each other.
        lock = self._locks.setdefault(sink.id, asyncio.Lock())
        async with lock:
            delay = self._next_post.get(sink.id, 0.0) - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._post(sink, alert, body)
            finally:
                interval = self._min_interval_s.get(sink.kind, 0.0)
                self._next_post[sink.id] = self._clock() + interval

    async def _post(self, sink: Sink, alert: Alert, body: bytes) -> None:
        headers = {"content-type": "application/json", "user-agent": "ses-tracker"}
        if sink.kind == "webhook" and self._secret is not None:
            now_s = int(time.time())
            headers[TIMESTAMP_HEADER] = str(now_s)
            headers[SIGNATURE_HEADER] = sign(self._secret, now_s, body)
        try:
            reply = await self._client.post(sink.url, body, headers)
        except OutboundFailed as exc:
            log.warning("alert_post_failed", sink=sink.name, key=alert.key, error=str(exc))
            raise RetryableDeliveryError(str(exc)) from exc
        status = reply.status
        if status < 300:
            log.info("alert_posted", sink=sink.name, key=alert.key, state=alert.state.value)
            return
        # Sinks may echo a request back; log the status only, never the body or URL.
        log.warning("alert_refused", sink=sink.name, key=alert.key, status=status)
        if status == 429 or status >= 500:
            raise RetryableDeliveryError(f"HTTP {status}", reply.retry_after_s)
        raise FinalDeliveryError(f"{sink.name} answered HTTP {status}")
