"""structlog set up for JSON lines on stderr, one object per event.

Library logs (uvicorn, redis, asyncio) go through the stdlib; they are rendered by
the same JSON renderer so an operator's log pipeline sees one format.

No secret reaches a log line at any level: every rendered line passes through a
:class:`Redactor` that knows the configured secrets (API token, Firehose key,
webhook URLs and secret, Redis and AWS credentials) in every form they can take in
a line (as written, JSON-escaped, URL-encoded), and removes ``token=`` query
values, bearer credentials and passwords inside URLs whatever they are, since a
request may carry a wrong token that is still someone's secret.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import orjson
import structlog

REDACTED = b"[redacted]"
# A secret shorter than this would be found in ordinary words and blank out logs;
# the settings refuse tokens that short where it matters.
MIN_SECRET_CHARS = 4

_PATTERNS: tuple[tuple[re.Pattern[bytes], bytes], ...] = (
    (re.compile(rb"(?i)([?&;]token=)[^&\s\"'\\]+"), rb"\1[redacted]"),
    (re.compile(rb"(?i)(bearer\s+)[^\s\"'\\,]+"), rb"\1[redacted]"),
    (re.compile(rb"(?i)(basic\s+)[A-Za-z0-9+/=]{8,}"), rb"\1[redacted]"),
    (
        re.compile(rb"(?i)(x-amz-firehose-access-key[\"']?\s*[:=,]\s*[\"']?)[^\s\"',]+"),
        rb"\1[redacted]",
    ),
    # scheme://user:password@host
    (re.compile(rb"(://[^/\s:@\"']*:)[^@\s\"'/]+@"), rb"\1[redacted]@"),
)

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class Redactor:
    """Removes secrets from a rendered log line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        needles: set[bytes] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_CHARS:
                continue
            for form in (secret, quote(secret, safe=""), quote(secret, safe="/:")):
                needles.add(form.encode())
                needles.add(orjson.dumps(form)[1:-1])
        # Longest first, so a URL goes whole before a token inside it.
        self._needles = sorted(needles, key=len, reverse=True)

    def __call__(self, line: bytes) -> bytes:
        for needle in self._needles:
            if needle in line:
                line = line.replace(needle, REDACTED)
        for pattern, replacement in _PATTERNS:
            line = pattern.sub(replacement, line)
        return line


_redactor = Redactor()


def redact(line: bytes) -> bytes:
    return _redactor(line)


def _serialize(value: Any, **_: Any) -> bytes:
    return _redactor(orjson.dumps(value, default=str))


def _serialize_text(value: Any, **_: Any) -> str:
    return _serialize(value).decode()


def configure(level: str = "info", secrets: Iterable[str] = ()) -> None:
    global _redactor
    _redactor = Redactor(secrets)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_serialize),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_serialize_text),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request's full URL at INFO; a chat webhook URL is a
    # credential (whoever has it can post to the channel), so keep those quiet.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
