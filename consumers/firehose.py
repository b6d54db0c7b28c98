"""Amazon Data Firehose HTTP endpoint delivery: the request and response format.

Firehose POSTs ``{"requestId", "timestamp", "records": [{"data": <base64>}]}``
(optionally gzip-encoded) and expects ``{"requestId", "timestamp"}`` back with 200,
or an ``errorMessage`` with an error status, after which it retries the same
request id. Each record's data is what the SES configuration set wrote: one or more
events as JSON.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

MAX_RECORDS = 10_000
MAX_REQUEST_ID_CHARS = 256


class FirehoseRequestError(ValueError):
    """The request is not a Firehose delivery; the text says why."""


@dataclass(frozen=True, slots=True)
class FirehoseDelivery:
    request_id: str
    records: list[bytes]

    def payload(self) -> bytes:
        """All records as one newline-delimited payload for the parser."""
        return b"\n".join(record.rstrip(b"\n") for record in self.records)


def parse_delivery(body: bytes, header_request_id: str | None) -> FirehoseDelivery:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FirehoseRequestError(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FirehoseRequestError("body must be a JSON object")
    request_id = document.get("requestId") or header_request_id
    if not isinstance(request_id, str) or not request_id:
        raise FirehoseRequestError("requestId missing")
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise FirehoseRequestError(f"requestId over {MAX_REQUEST_ID_CHARS} characters")
    raw_records = document.get("records")
    if not isinstance(raw_records, list):
        raise FirehoseRequestError("records must be a list")
    if len(raw_records) > MAX_RECORDS:
        raise FirehoseRequestError(f"over {MAX_RECORDS} records")
    records: list[bytes] = []
    for index, record in enumerate(raw_records):
        data = record.get("data") if isinstance(record, dict) else None
        if not isinstance(data, str):
            raise FirehoseRequestError(f"records[{index}].data must be a base64 string")
        try:
            records.append(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            raise FirehoseRequestError(f"records[{index}].data is not base64") from None
    return FirehoseDelivery(request_id, records)


def response(request_id: str | None, now_ms: int, error: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"requestId": request_id or "", "timestamp": now_ms}
    if error is not None:
        body["errorMessage"] = error
    return body
