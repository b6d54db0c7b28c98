"""SQS source (aiobotocore): SES events delivered by SNS or EventBridge to queues.

Semantics, at least once:

* each queue has several pollers, each long-polling (20 s, up to 10 messages);
* a received batch is merged into the store in one call; only then are its
  messages deleted, in one DeleteMessageBatch (entries that fail are retried,
  and if they still fail the messages simply come back: merging is idempotent);
* while a batch takes long (a slow or unavailable store), its messages' visibility
  is extended, so no other poller gets them meanwhile;
* a message with any record that cannot be parsed is not deleted: its good events
  are applied, and the message is left for the queue's redrive policy to park in
  the dead-letter queue after ``maxReceiveCount`` receives; it is counted. So is
  a message holding an SES message the store refused to merge (poison,
  ``service.pipeline``): the rest of the batch is kept and deleted.

Bodies may be raw SES records, SNS envelopes (raw message delivery off) or
EventBridge events; the one parser reads them all.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import structlog
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from consumers.base import Source, Stopped
from service.lag import EventLag, newest_event_ms
from service.pipeline import Pipeline
from service.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

_REGION_IN_URL = re.compile(r"sqs[.-]([a-z0-9-]+)\.amazonaws\.com")


def region_of(queue_url: str) -> str:
    """The queue URL's region; else the standard AWS variables; else us-east-1."""
    match = _REGION_IN_URL.search(queue_url)
    if match:
        return match.group(1)
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def queue_name(queue_url: str) -> str:
    """The queue's name: what figures are labelled by (the URL names the account)."""
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


class SqsSource(Source):
    name = "sqs"

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        queue_urls: list[str],
        endpoint_url: str | None = None,
        region: str | None = None,
        pollers_per_queue: int = 2,
        wait_time_s: int = 20,
        max_messages: int = 10,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.queue_urls = queue_urls
        self.endpoint_url = endpoint_url
        self.region = region or region_of(queue_urls[0])
        self.pollers_per_queue = pollers_per_queue
        self.wait_time_s = wait_time_s
        self.max_messages = max_messages
        self.deleted = 0
        self.left_for_redrive = 0
        self.delete_failures = 0
        # By queue; a full receive is taken as more waiting behind it.
        self.event_lag = EventLag(pipeline.clock_ms)

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "deleted": self.deleted,
            "left_for_redrive": self.left_for_redrive,
            "delete_failures": self.delete_failures,
            "event_lag_s": self.event_lag.seconds(),
        }

    async def run(self) -> None:
        self.state = "connecting"
        session = get_session()
        async with session.create_client(
            "sqs", endpoint_url=self.endpoint_url, region_name=self.region
        ) as client:
            pollers = [
                self._poll(client, url)
                for url in self.queue_urls
                for _ in range(self.pollers_per_queue)
            ]
            await asyncio.gather(*pollers)
        self.connected = False
        self.state = "stopped"

    async def _poll(self, client: Any, queue_url: str) -> None:
        visibility_s = await self._visibility_timeout(client, queue_url)
        if visibility_s is None:
            return
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self.stopping:
                receive = asyncio.ensure_future(
                    client.receive_message(
                        QueueUrl=queue_url,
                        MaxNumberOfMessages=self.max_messages,
                        WaitTimeSeconds=self.wait_time_s,
                        MessageSystemAttributeNames=["ApproximateReceiveCount"],
                    )
                )
                await asyncio.wait({receive, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    # Stopping mid-poll: anything SQS hands over now stays invisible
                    # until its timeout and is then delivered again.
                    await cancel_and_wait([receive])
                    break
                try:
                    messages = receive.result().get("Messages", [])
                except (BotoCoreError, ClientError, OSError) as exc:
                    self.connected = False
                    self.state = "retrying"
                    self.failure = f"sqs: {type(exc).__name__}: {exc}"
                    log.warning("sqs_receive_failed", queue=queue_url, error=self.failure)
                    await self.sleep(2.0)
                    continue
                self.connected = True
                self.state = "polling"
                # A store outage is set again by durably(); /readyz also pings the store.
                self.failure = None
                if not messages:
                    self.event_lag.read(queue_name(queue_url), None, behind=False)
                    continue
                try:
                    await self._handle(client, queue_url, messages, visibility_s)
                except Stopped:
                    break
        finally:
            stop_wait.cancel()

    async def _visibility_timeout(self, client: Any, queue_url: str) -> int | None:
        while not self.stopping:
            try:
                answer = await client.get_queue_attributes(
                    QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]
                )
                self.connected = True
                return int(answer["Attributes"]["VisibilityTimeout"])
            except (BotoCoreError, ClientError, OSError) as exc:
                self.state = "retrying"
                self.failure = f"sqs: {type(exc).__name__}: {exc}"
                log.warning("sqs_queue_unavailable", queue=queue_url, error=self.failure)
                await self.sleep(2.0)
        return None

    async def _handle(
        self, client: Any, queue_url: str, messages: list[dict[str, Any]], visibility_s: int
    ) -> None:
        events = []
        account_events = []
        done: list[dict[str, Any]] = []
        # Which SES messages each SQS message holds, to leave poison for redrive.
        holds: list[tuple[dict[str, Any], set[str]]] = []
        for message in messages:
            result = await self.pipeline.parse_off_loop(message.get("Body", "").encode(), "sqs")
            holds.append((message, {event.message_id for event in result.events}))
            events.extend(result.events)
            account_events.extend(result.account_events)
            if result.rejected_count:
                self.left_for_redrive += 1
                log.warning(
                    "sqs_message_left_for_redrive",
                    queue=queue_url,
                    sqs_message_id=message.get("MessageId"),
                    receive_count=message.get("Attributes", {}).get("ApproximateReceiveCount"),
                )
            else:
                done.append(message)
        keeper = asyncio.ensure_future(
            self._keep_invisible(client, queue_url, messages, visibility_s)
        )

        async def leave_for_redrive(refused: dict[str, str]) -> None:
            # Not deleted: the queue's redrive policy parks it after maxReceiveCount.
            for message, message_ids in holds:
                if message in done and not message_ids.isdisjoint(refused):
                    done.remove(message)
                    self.left_for_redrive += 1
                    log.warning(
                        "sqs_message_left_for_redrive",
                        queue=queue_url,
                        sqs_message_id=message.get("MessageId"),
                        reason="merge_failed",
                    )

        try:
            await self.durably(
                lambda: self.pipeline.apply(
                    events, "sqs", account_events=account_events, park=leave_for_redrive
                ),
                what="sqs batch",
            )
        finally:
            await cancel_and_wait([keeper])
        await self._delete(client, queue_url, done)
        behind = len(messages) >= self.max_messages
        self.event_lag.read(queue_name(queue_url), newest_event_ms(events), behind)

    async def _keep_invisible(
        self, client: Any, queue_url: str, messages: list[dict[str, Any]], visibility_s: int
    ) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": visibility_s}
            for i, m in enumerate(messages)
        ]
        while True:
            await asyncio.sleep(max(1.0, visibility_s / 2))
            try:
                await client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
            except (BotoCoreError, ClientError, OSError) as exc:
                log.warning("sqs_visibility_extension_failed", queue=queue_url, error=str(exc))

    async def _delete(self, client: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
        pending = {str(i): m["ReceiptHandle"] for i, m in enumerate(messages)}
        for attempt in range(3):
            if not pending:
                return
            entries = [{"Id": k, "ReceiptHandle": v} for k, v in pending.items()]
            try:
                answer = await client.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            except (BotoCoreError, ClientError, OSError) as exc:
                log.warning("sqs_delete_failed", queue=queue_url, error=str(exc), attempt=attempt)
                await self.sleep(0.5 * (attempt + 1))
                continue
            for ok in answer.get("Successful", []):
                pending.pop(ok["Id"], None)
                self.deleted += 1
            failed = answer.get("Failed", [])
            for entry in failed:
                if entry.get("SenderFault"):
                    # A stale receipt handle will not improve with retries.
                    pending.pop(entry["Id"], None)
            if failed:
                log.warning("sqs_delete_partially_failed", queue=queue_url, failed=len(failed))
        if pending:
            # Their state is durable; SQS will deliver them again and the merge is
            # idempotent, so this costs a repeat, never a loss.
            self.delete_failures += len(pending)
            log.warning("sqs_messages_not_deleted", queue=queue_url, count=len(pending))
