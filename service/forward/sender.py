"""Posting the outbox to each subscription: batched, signed, retried, one sender each.

Each subscription has its own task, so a slow or hung receiver holds up nobody
else, and ingestion never waits on any (the merge only appends to the outbox). A
task sends only while it holds the subscription's lease (``Outbox.lease``): one
replica at a time, so items reach a receiver in the order the changes were merged.
A failed post (network error, timeout, any non-2xx answer) is retried with
exponential backoff and full jitter, never sooner than ``Retry-After`` says; the
entries stay in the outbox meanwhile, so a receiver down for an hour loses
nothing. Each post goes through ``service.outbound`` (bounded reply, one deadline,
vetted destination); its deadline is below the lease, and the lease is renewed while
the post runs, so a slow receiver cannot let another replica take the subscription
and send the same items, out of order, meanwhile. An entry is acknowledged once
every item taken from it was delivered: a sender that dies or loses its lease
mid-batch leaves it to the next holder, which sends its items again with the same
``id`` (at least once).

An erased recipient (``forgotten``, when given) is left out of every post: right
before each request body is built (a first try or a retry), its changes are dropped
and the other changes' events are rewritten without it, so entries read before the
erasure ran (the outbox's own erasure, ``Outbox.erase_address``, cannot reach them)
forward nothing of it either.

Each POST is ``{"items": [...]}`` (``service.forward.items.item``), signed as the
alert ``webhook`` sink is: ``X-SES-Tracker-Timestamp`` (Unix seconds) and
``X-SES-Tracker-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`` under the
subscription's secret.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import httpx
import orjson
import structlog

from service.codec import decode_event
from service.erasure import blob_without
from service.forward.config import Subscription
from service.forward.items import Change, Facts, facts_of, item, matches
from service.forward.outbox import Entry, Outbox
from service.outages import OUTAGES, STORE
from service.outbound import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Outbound,
    OutboundFailed,
    backoff_s,
    sign,
)
from service.stores.base import StoreUnavailable
from service.tasks import cancel_and_wait, crash_reporter

log = structlog.get_logger(__name__)
# A sender is not awaited while it runs: its crash is said by this.
_report_sender_crash = crash_reporter("forward_sender_crashed")

LEASE_MS = 15_000
READ_ENTRIES = 50
READ_BLOCK_MS = 1_000
POST_TIMEOUT_S = 10.0
RETRY_AFTER_CAP_S = 3_600.0


class PostFailed(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass
class Figures:
    """One subscription's, as this replica sees it (metrics, /readyz, the page)."""

    sent: int = 0  # items delivered
    failed: int = 0  # posts that failed (each retried)
    queued: int = 0  # outbox entries not yet acknowledged
    oldest_ms: int | None = None  # when the oldest of them was merged
    sending: bool = False  # this replica holds the lease
    last_error: str | None = None
    forgotten: int = 0  # changes left out: their recipient was erased


class Taken(NamedTuple):
    """A change a subscription takes, and the id its item is named by."""

    entry_id: str
    index: int
    change: Change
    facts: Facts


class Forwarder:
    """Posts each subscription's changes from the outbox to the user's app: one
    sender per subscription, under a lease so one replica sends it at a time,
    signed, with retries and backoff (``Retry-After`` honoured); at least once, with
    stable item ids; changes of an erased address are never posted.
    """

    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        outbox: Outbox,
        client: Outbound | httpx.AsyncClient,
        *,
        allow_private: bool = False,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        lease_ms: int = LEASE_MS,
        post_timeout_s: float = POST_TIMEOUT_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        forgotten: Callable[[str, int], bool] | None = None,
    ) -> None:
        """``forgotten(address, sent_at_ms)``: whether the address was erased after a
        message sent then (lower-cased, as stored; a message sent after the erasure
        is new data); asked right before each request body is built."""
        if post_timeout_s * 1000 >= lease_ms:
            # A post that outlives the lease lets another replica send meanwhile.
            raise ValueError("the post deadline must be shorter than the lease")
        self.subscriptions = list(subscriptions)
        self.outbox = outbox
        # A plain client (tests, tools) still gets the deadline and the bounded read.
        self._client = (
            client
            if isinstance(client, Outbound)
            else Outbound.over(client, allow_private=allow_private, deadline_s=post_timeout_s)
        )
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._lease_ms = lease_ms
        self._post_timeout_s = post_timeout_s
        self._forgotten = forgotten
        self.holder = uuid.uuid4().hex  # this replica, in the leases
        # Set by stop(): each sender ends at its next turn, whether or not a
        # cancellation reaches it (a client library may swallow one).
        self._stopping = asyncio.Event()
        self.figures = {s.name: Figures() for s in self.subscriptions}
        # Each subscription's sender task and its own stop, by subscription id.
        self._senders: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._by_id = {s.id: s for s in self.subscriptions}
        self._running = False
        # Held while the senders change (run's start and end, apply).
        self._changing = asyncio.Lock()

    def stop(self) -> None:
        self._stopping.set()

    async def aclose(self) -> None:
        self.stop()
        await self._client.aclose()

    async def run(self) -> None:
        """Send for every subscription until stopped or cancelled; ``apply`` changes
        the subscriptions meanwhile."""
        try:
            async with self._changing:
                await self.outbox.prepare([s.id for s in self.subscriptions])
                self._start(self.subscriptions)
                self._running = True
            await self._stopping.wait()
        finally:
            async with self._changing:
                self._running = False
                await self._end(list(self._senders))

    async def apply(self, subscriptions: Sequence[Subscription]) -> None:
        """Send for ``subscriptions`` from now on (a reload, ``service.reload``).

        A subscription is known by its id (name and URL): one kept keeps its place in
        the outbox, one edited (filters, secret) restarts its sender with the new
        settings at that place, one added starts at the end (it forwards what comes),
        one removed stops sending; its consumer group stays, so putting it back
        resumes where it was while the outbox still holds that.

        One change at a time (a reload racing the poll, or ``run`` starting); the new
        places are made before any sender stops, so an outage there raises with the
        running senders untouched. Returns when the new senders run.
        """
        async with self._changing:
            wanted = {s.id: s for s in subscriptions}
            ending = [sid for sid, s in self._by_id.items() if wanted.get(sid) != s]
            starting = [s for s in subscriptions if self._by_id.get(s.id) != s]
            if self._running:
                await self.outbox.prepare([s.id for s in starting])
            for subscription in subscriptions:
                self.figures.setdefault(subscription.name, Figures())
            if self._running:
                await self._end(ending)
                self._start(starting)
            else:
                self._by_id = dict(wanted)
            self.subscriptions = list(subscriptions)
            for name in set(self.figures) - {s.name for s in subscriptions}:
                del self.figures[name]

    def _start(self, subscriptions: Sequence[Subscription]) -> None:
        for subscription in subscriptions:
            stop = asyncio.Event()
            task = asyncio.create_task(
                self._run(subscription, stop), name=f"forward:{subscription.name}"
            )
            task.add_done_callback(_report_sender_crash)
            self._senders[subscription.id] = (task, stop)
            self._by_id[subscription.id] = subscription

    async def _end(self, subscription_ids: Sequence[str]) -> None:
        """Stop these senders now. A post in hand is cut off and its batch sent again
        by the next sender: at least once, with the same item ids, as after a crash
        (waiting for it instead would let a stopping sender go on retrying)."""
        ending = [self._senders.pop(sid) for sid in subscription_ids if sid in self._senders]
        for sid in subscription_ids:
            self._by_id.pop(sid, None)
        for _, stop in ending:
            stop.set()
        await cancel_and_wait(task for task, _ in ending)

    async def _run(self, subscription: Subscription, stop: asyncio.Event) -> None:
        figures = self.figures[subscription.name]
        try:
            while not (self._stopping.is_set() or stop.is_set()):
                try:
                    await self._round(subscription, figures)
                except StoreUnavailable as exc:
                    figures.last_error = str(exc)
                    OUTAGES.failed(STORE, exc, part=f"forwarding to {subscription.name}")
                    await self._sleep(1.0)
        finally:
            figures.sending = False
            await self.outbox.release(subscription.id, self.holder)

    async def _round(self, subscription: Subscription, figures: Figures) -> None:
        if not await self.outbox.lease(subscription.id, self.holder, self._lease_ms):
            figures.sending = False
            # The backlog is the outbox's, not the holder's: kept current here too, so
            # no replica reports a stale one (metrics take the largest).
            await self._note_backlog(subscription, figures)
            await self._sleep(self._lease_ms / 3_000)
            return
        figures.sending = True
        entries = await self.outbox.read(subscription.id, READ_ENTRIES, READ_BLOCK_MS)
        if entries and await self._deliver(subscription, figures, entries):
            await self.outbox.ack(subscription.id, [entry.id for entry in entries])
        await self._note_backlog(subscription, figures)
        if not entries:
            # The memory outbox does not block on read: do not spin.
            await self._sleep(0.05)

    async def _note_backlog(self, subscription: Subscription, figures: Figures) -> None:
        backlog = await self.outbox.backlog(subscription.id)
        figures.queued, figures.oldest_ms = backlog.entries, backlog.oldest_ms

    async def _deliver(
        self, subscription: Subscription, figures: Figures, entries: list[Entry]
    ) -> bool:
        """Post every item the subscription takes from ``entries``; False when the
        lease was lost first (the next holder sends them)."""
        cache: dict[bytes, Facts] = {}
        taken: list[Taken] = []
        for entry in entries:
            for index, change in enumerate(entry.changes):
                facts = facts_of(change.header, cache)
                if matches(
                    change,
                    facts,
                    statuses=subscription.statuses,
                    configuration_sets=subscription.configuration_sets,
                    tags=subscription.tags,
                    providers=subscription.providers,
                ):
                    taken.append(Taken(*entry.place(index), change, facts))
        for start in range(0, len(taken), subscription.batch_size):
            batch = taken[start : start + subscription.batch_size]
            sent = await self._post_until_delivered(subscription, figures, batch)
            if sent is None:
                return False
            figures.sent += sent
        return True

    def _unforgotten(
        self, subscription: Subscription, figures: Figures, batch: list[Taken]
    ) -> list[Taken]:
        """``batch`` without what ``forgotten`` says was erased: its changes left out
        (counted, once: the batch returned holds them no more), the others' events
        rewritten without it."""
        if self._forgotten is None:
            return batch
        forgotten = self._forgotten
        rewritten: dict[bytes, bytes] = {}  # event blob -> without the erased
        kept: list[Taken] = []
        for taken in batch:
            change = taken.change
            # The message's send time: the change's, less its latency when known.
            sent_at = change.at - change.latency_ms if change.latency_ms >= 0 else change.at
            if forgotten(change.address, sent_at):
                continue
            event = rewritten.get(change.event)
            if event is None:
                event = rewritten[change.event] = _event_unforgotten(
                    change.event, lambda address, at=sent_at: forgotten(address, at)
                )
            if event is not change.event:
                taken = taken._replace(change=change._replace(event=event))
            kept.append(taken)
        if dropped := len(batch) - len(kept):
            figures.forgotten += dropped
            log.info("forward_changes_forgotten", subscription=subscription.name, changes=dropped)
        return kept

    async def _post_until_delivered(
        self, subscription: Subscription, figures: Figures, batch: list[Taken]
    ) -> int | None:
        """Post ``batch`` until delivered: how many items went (None when the lease
        was lost first). What was erased meanwhile is left out of every try."""
        attempt = 0
        while True:
            if not await self.outbox.lease(subscription.id, self.holder, self._lease_ms):
                figures.sending = False
                return None
            batch = self._unforgotten(subscription, figures, batch)
            if not batch:
                return 0
            body = orjson.dumps({"items": [item(*taken) for taken in batch]})
            try:
                if not await self._post_holding(subscription, body):
                    figures.sending = False
                    return None
                figures.last_error = None
                return len(batch)
            except PostFailed as exc:
                attempt += 1
                figures.failed += 1
                figures.last_error = str(exc)
                await self._note_backlog(subscription, figures)  # it grows meanwhile
                wait = backoff_s(
                    attempt + 1,
                    self._backoff_s,
                    self._max_backoff_s,
                    exc.retry_after_s,
                    RETRY_AFTER_CAP_S,
                )
                log.warning(
                    "forward_post_failed",
                    subscription=subscription.name,
                    host=subscription.host,
                    error=str(exc),
                    items=len(batch),
                    retry_in_s=round(wait, 1),
                )
                if not await self._wait_holding(subscription, wait):
                    figures.sending = False
                    return None

    async def _wait_holding(self, subscription: Subscription, seconds: float) -> bool:
        """Sleep, renewing the lease meanwhile; False if it was lost."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await self._sleep(min(left, self._lease_ms / 3_000))
            if not await self.outbox.lease(subscription.id, self.holder, self._lease_ms):
                return False
        return True

    async def _post_holding(self, subscription: Subscription, body: bytes) -> bool:
        """Post, renewing the lease every third of it meanwhile; False (the post
        abandoned) if the lease was lost, PostFailed if the post failed."""
        post = asyncio.create_task(self._post(subscription, body))
        try:
            while True:
                done, _ = await asyncio.wait({post}, timeout=self._lease_ms / 3_000)
                if done:
                    post.result()
                    return True
                if not await self.outbox.lease(subscription.id, self.holder, self._lease_ms):
                    log.warning("forward_lease_lost_mid_post", subscription=subscription.name)
                    return False
        finally:
            await cancel_and_wait([post])

    async def _post(self, subscription: Subscription, body: bytes) -> None:
        now_s = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "ses-tracker",
            TIMESTAMP_HEADER: str(now_s),
            SIGNATURE_HEADER: sign(subscription.secret.encode(), now_s, body),
        }
        try:
            reply = await self._client.post(
                subscription.url, body, headers, deadline_s=self._post_timeout_s
            )
        except OutboundFailed as exc:
            raise PostFailed(str(exc)) from exc
        if not reply.ok:
            # Any refusal is retried: entries wait in the outbox for the receiver to be
            # fixed (a receiver's 4xx is usually its own mistake) rather than be lost.
            raise PostFailed(f"HTTP {reply.status}", reply.retry_after_s)


def _event_unforgotten(blob: bytes, forgotten: Callable[[str], bool]) -> bytes:
    """The event ``blob`` without each address it names that ``forgotten`` says was
    erased (``blob`` itself when it names none; b"" when it named only them)."""
    if not blob:
        return blob
    event = decode_event(blob)
    named = set(event.recipients)
    for report in event.details.get("reports") or ():
        if isinstance(report, dict) and isinstance(report.get("address"), str):
            named.add(report["address"])
    gone = frozenset(address for address in named if forgotten(address))
    if not gone:
        return blob
    # One rewrite for every erased address (service.erasure's rules), not one each.
    return blob_without(blob, gone) or b""
