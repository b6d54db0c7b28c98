"""HTTP sources that authenticate by their own means, not the API token.

SNS cannot send a bearer token (it signs its messages instead), and Firehose sends
its access key in ``X-Amz-Firehose-Access-Key``; so these two routes are exempt from
``SES_TRACKER_API_TOKEN`` and check those instead. Both are closed (403) until their
setting says who may post: they face the internet.
"""

from __future__ import annotations

import hmac

import orjson
import structlog
from fastapi import APIRouter, Depends, Request

from api.body import read_limited
from api.deps import RuntimeDep, rate_limited
from api.responses import OrjsonResponse
from api.schemas import ERRORS, ErrorAnswer, FirehoseAnswer, SnsAnswer
from consumers import firehose
from consumers.sns import SignatureError, check_freshness
from service.clock import wall_clock_ms
from service.logs import loggable
from service.stores import StoreUnavailable

log = structlog.get_logger(__name__)

router = APIRouter()

# SNS messages are at most 256 KiB; JSON escaping of the Message at most doubles it.
MAX_SNS_BODY_BYTES = 1024 * 1024
_SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
# A TopicArn is at most ~330 characters; anyone can post one of a megabyte, and these
# routes log it before the signature is checked.
TOPIC_LOG_CHARS = 256


_SNS_MESSAGE = {
    "requestBody": {
        "required": True,
        "description": "An SNS HTTP(S) delivery: Notification or (Un)SubscriptionConfirmation.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        name: {"type": "string"}
                        for name in (
                            "Type",
                            "MessageId",
                            "TopicArn",
                            "Message",
                            "Timestamp",
                            "Subject",
                            "SignatureVersion",
                            "Signature",
                            "SigningCertURL",
                            "SubscribeURL",
                            "Token",
                        )
                    },
                }
            }
        },
    }
}
_FIREHOSE_DELIVERY = {
    "requestBody": {
        "required": True,
        "description": "An Amazon Data Firehose HTTP endpoint delivery.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "requestId": {"type": "string"},
                        "timestamp": {"type": "integer"},
                        "records": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"data": {"type": "string", "format": "byte"}},
                            },
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/ingest/sns",
    response_model=SnsAnswer,
    responses={**ERRORS, 502: {"model": ErrorAnswer}},
    dependencies=[Depends(rate_limited)],
    openapi_extra=_SNS_MESSAGE,
)
async def sns_endpoint(request: Request, runtime: RuntimeDep) -> OrjsonResponse:
    """An SNS HTTP(S) subscription endpoint: confirms, verifies, de-duplicates, ingests.

    Checks, cheapest first: the endpoint is open, the topic is allowed, the message
    is fresh, the signature is SNS's. Only the signed ``Message`` is ingested.
    """
    allowed = runtime.settings.allowed_topic_arns
    if not allowed:
        return _error(403, "SNS endpoint closed: set SES_TRACKER_SNS_TOPIC_ARNS (or * for any)")
    limit = min(runtime.settings.max_body_bytes, MAX_SNS_BODY_BYTES)
    body = await read_limited(request, limit)
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "body is not an SNS message (not JSON)")
    if not isinstance(message, dict) or message.get("Type") not in _SNS_TYPES:
        return _error(400, "body is not an SNS message")
    topic = message.get("TopicArn")
    shown = loggable(topic, TOPIC_LOG_CHARS) if isinstance(topic, str) else None
    if not isinstance(topic, str) or ("*" not in allowed and topic not in allowed):
        log.warning("sns_topic_not_allowed", topic=shown)
        return _error(403, "topic not allowed")
    try:
        check_freshness(message, wall_clock_ms(), runtime.settings.sns_max_age_s)
        await runtime.sns_verifier.verify(message)
    except SignatureError as exc:
        log.warning("sns_message_refused", reason=str(exc), topic=shown)
        return _error(403, f"SNS message refused: {exc}")

    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        try:
            await runtime.confirm_subscription(runtime.sns_verifier.subscribe_url(message))
        except SignatureError as exc:
            return _error(403, str(exc))
        except Exception as exc:  # the fetch failed: tell SNS, which retries
            log.error("sns_confirmation_failed", topic=shown, error=type(exc).__name__)
            return _error(502, "could not confirm the subscription")
        log.info("sns_subscription_confirmed", topic=shown)
        return OrjsonResponse({"confirmed": True})
    if kind == "UnsubscribeConfirmation":
        log.warning("sns_unsubscribed", topic=shown)
        return OrjsonResponse({"unsubscribed": True})

    message_id = message.get("MessageId")
    signed_message = message.get("Message")
    if not isinstance(message_id, str) or not isinstance(signed_message, str):
        return _error(400, "Notification without MessageId or Message")
    if await runtime.seen_sns_ids.seen(message_id):
        return OrjsonResponse({"duplicate": True})
    # Nothing but the signed Message reaches the parser: every other field of the
    # body could have been added by whoever relayed it. SNS retries 5xx only (a 4xx
    # is discarded), so a signed message waits for a parse slot instead of a 429.
    result = await runtime.pipeline.ingest(signed_message.encode(), source="sns", wait=True)
    # Only now: a delivery that failed (store down, 503) must not look seen.
    await runtime.seen_sns_ids.remember(message_id)
    return OrjsonResponse(
        {
            "accepted": result.accepted,
            "rejected": result.rejected_count,
            "ignored": result.ignored_count,
        }
    )


@router.post(
    "/ingest/firehose",
    response_model=FirehoseAnswer,
    responses={
        **ERRORS,
        **{status: {"model": FirehoseAnswer} for status in (401, 403, 503)},
        400: {"model": FirehoseAnswer | ErrorAnswer},
    },
    dependencies=[Depends(rate_limited)],
    openapi_extra=_FIREHOSE_DELIVERY,
)
async def firehose_endpoint(request: Request, runtime: RuntimeDep) -> OrjsonResponse:
    """An Amazon Data Firehose HTTP endpoint destination."""
    header_id = request.headers.get("x-amz-firehose-request-id")
    if header_id is not None and len(header_id) > firehose.MAX_REQUEST_ID_CHARS:
        header_id = None
    expected = runtime.settings.firehose_access_key
    if expected is None:
        return _firehose(
            header_id, 403, "Firehose endpoint closed: set SES_TRACKER_FIREHOSE_ACCESS_KEY"
        )
    presented = request.headers.get("x-amz-firehose-access-key", "")
    if not hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
        log.warning("firehose_access_key_rejected")
        return _firehose(header_id, 401, "invalid access key")
    body = await read_limited(request, runtime.settings.max_body_bytes)
    try:
        delivery = firehose.parse_delivery(body, header_id)
    except firehose.FirehoseRequestError as exc:
        return _firehose(header_id, 400, str(exc))
    try:
        if await runtime.seen_firehose_ids.seen(delivery.request_id):
            return _firehose(delivery.request_id, 200)
        # Records that cannot be parsed are counted and logged; a retry cannot fix
        # them, so the delivery still succeeds.
        # Firehose retries any answer but 200, so a full parse pool is a 429 here.
        await runtime.pipeline.ingest(delivery.payload(), source="firehose", wait=False)
        await runtime.seen_firehose_ids.remember(delivery.request_id)
    except StoreUnavailable:
        return _firehose(delivery.request_id, 503, "state store unavailable, retry")
    return _firehose(delivery.request_id, 200)


def _error(status: int, text: str) -> OrjsonResponse:
    return OrjsonResponse({"error": text}, status_code=status)


def _firehose(request_id: str | None, status: int, error: str | None = None) -> OrjsonResponse:
    body = firehose.response(request_id, wall_clock_ms(), error)
    if error is not None:
        body["error"] = error  # the one error shape every route answers with
    return OrjsonResponse(body, status_code=status)
