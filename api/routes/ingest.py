"""HTTP sources that authenticate by their own means, not the API token.

SNS cannot send a bearer token (it signs its messages instead), and Firehose sends
its access key in ``X-Amz-Firehose-Access-Key``; so these two routes are exempt from
``SES_TRACKER_API_TOKEN`` and check those instead.
"""

from __future__ import annotations

import hmac

import orjson
import structlog
from fastapi import APIRouter, Request

from api.body import read_limited
from api.deps import RuntimeDep
from api.responses import OrjsonResponse
from consumers import firehose
from consumers.sns import SignatureError
from service.pipeline import wall_clock_ms
from service.stores import StoreUnavailable

log = structlog.get_logger(__name__)

router = APIRouter()


@router.post("/ingest/sns")
async def sns_endpoint(request: Request, runtime: RuntimeDep) -> OrjsonResponse:
    """An SNS HTTP(S) subscription endpoint: confirms, verifies, de-duplicates, ingests."""
    body = await read_limited(request, runtime.settings.max_body_bytes)
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return OrjsonResponse({"error": "body is not an SNS message (not JSON)"}, status_code=400)
    if not isinstance(message, dict):
        return OrjsonResponse({"error": "body is not an SNS message"}, status_code=400)
    try:
        await runtime.sns_verifier.verify(message)
    except SignatureError as exc:
        log.warning("sns_forgery_rejected", reason=str(exc), topic=message.get("TopicArn"))
        return OrjsonResponse({"error": f"SNS signature rejected: {exc}"}, status_code=403)
    allowed = runtime.settings.allowed_topic_arns
    if allowed and message.get("TopicArn") not in allowed:
        log.warning("sns_topic_not_allowed", topic=message.get("TopicArn"))
        return OrjsonResponse({"error": "topic not allowed"}, status_code=403)

    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        try:
            await runtime.confirm_subscription(runtime.sns_verifier.subscribe_url(message))
        except SignatureError as exc:
            return OrjsonResponse({"error": str(exc)}, status_code=403)
        except Exception as exc:  # the fetch failed: tell SNS, which retries
            log.error("sns_confirmation_failed", topic=message.get("TopicArn"), error=repr(exc))
            return OrjsonResponse({"error": "could not confirm the subscription"}, status_code=502)
        log.info("sns_subscription_confirmed", topic=message.get("TopicArn"))
        return OrjsonResponse({"confirmed": True})
    if kind == "UnsubscribeConfirmation":
        log.warning("sns_unsubscribed", topic=message.get("TopicArn"))
        return OrjsonResponse({"unsubscribed": True})

    message_id = message.get("MessageId")
    if runtime.recent_sns_ids.seen(message_id):
        return OrjsonResponse({"duplicate": True})
    result = await runtime.pipeline.ingest(body, source="sns")
    # Only now: a delivery that failed (store down, 503) must not look seen.
    runtime.recent_sns_ids.add(message_id)
    return OrjsonResponse(
        {
            "accepted": result.accepted,
            "rejected": result.rejected_count,
            "ignored": result.ignored_count,
        }
    )


@router.post("/ingest/firehose")
async def firehose_endpoint(request: Request, runtime: RuntimeDep) -> OrjsonResponse:
    """An Amazon Data Firehose HTTP endpoint destination."""
    header_id = request.headers.get("x-amz-firehose-request-id")
    expected = runtime.settings.firehose_access_key
    if expected is not None:
        presented = request.headers.get("x-amz-firehose-access-key", "")
        if not hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
            log.warning("firehose_access_key_rejected", request_id=header_id)
            return _firehose(header_id, 401, "invalid access key")
    body = await read_limited(request, runtime.settings.max_body_bytes)
    try:
        delivery = firehose.parse_delivery(body, header_id)
    except firehose.FirehoseRequestError as exc:
        return _firehose(header_id, 400, str(exc))
    if runtime.recent_firehose_ids.seen(delivery.request_id):
        return _firehose(delivery.request_id, 200)
    try:
        # Records that cannot be parsed are counted and logged; a retry cannot fix
        # them, so the delivery still succeeds.
        await runtime.pipeline.ingest(delivery.payload(), source="firehose")
    except StoreUnavailable:
        return _firehose(delivery.request_id, 503, "state store unavailable, retry")
    runtime.recent_firehose_ids.add(delivery.request_id)
    return _firehose(delivery.request_id, 200)


def _firehose(request_id: str | None, status: int, error: str | None = None) -> OrjsonResponse:
    return OrjsonResponse(firehose.response(request_id, wall_clock_ms(), error), status_code=status)
