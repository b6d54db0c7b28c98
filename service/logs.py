"""structlog set up for JSON lines on stderr, one object per event.

Library logs (uvicorn, redis, asyncio) go through the stdlib; they are rendered by
the same JSON renderer so an operator's log pipeline sees one format.

No secret reaches a log line at any level: every rendered line passes through a
:class:`Redactor` that knows the configured secrets (API token, Firehose key,
webhook URLs and secret, Redis and AWS credentials) in every form they can take in
a line (as written, JSON-escaped, URL-encoded), and removes the values of
credential-named query parameters (``token=``, ``key=``...; names percent-decoded
first, as the server decodes them: ``?%74oken=`` is ``?token=``), bearer credentials
and passwords inside URLs whatever they are, since a request may carry a wrong
token that is still someone's secret. uvicorn's request lines lose their query
string before rendering: the websocket takes ``?token=``.

Strings from outside (an SNS TopicArn, a header) are cut before they reach a field
(:func:`loggable`), and every field is bounded again at rendering, so no request
can make a log line its own size.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import orjson
import structlog

REDACTED = b"[redacted]"
# A secret shorter than this would be found in ordinary words and blank out logs;
# the settings refuse tokens that short where it matters.
MIN_SECRET_CHARS = 4
# A string from outside, as a log field: this many characters by default.
LOG_CHARS = 64
# Any rendered field past this is cut (a net under loggable: a field someone forgot).
MAX_FIELD_CHARS = 2_048
# A traceback keeps its head and its tail (where the exception's text is).
MAX_EXCEPTION_CHARS = 16_384

# Query parameters whose values are credentials, by their decoded, lowercased name.
SECRET_PARAMETERS = frozenset(
    {
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "api_key",
        "apikey",
        "key",
        "access_key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "signature",
        "sig",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)
# name=value after ?, & or ;, inside a rendered line (JSON escapes end a value).
_PARAMETER = re.compile(rb"([?&;])([^=&?;#\s\"'\\]{1,64})=([^&\s\"'\\]*)")

_PATTERNS: tuple[tuple[re.Pattern[bytes], bytes], ...] = (
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
        line = _PARAMETER.sub(self._parameter, line)
        for pattern, replacement in _PATTERNS:
            line = pattern.sub(replacement, line)
        return line

    def _parameter(self, found: re.Match[bytes]) -> bytes:
        """A query parameter, its value redacted when its name (decoded as a server
        would) says credential, or when the decoded value holds a known secret."""
        if not found.group(3):
            return found.group(0)
        name = _decoded(found.group(2)).decode("utf-8", "replace").lower()
        if name in SECRET_PARAMETERS or any(
            needle in _decoded(found.group(3)) for needle in self._needles
        ):
            return found.group(1) + found.group(2) + b"=" + REDACTED
        # A value can hold "name=value;token=..." of its own: looked at as well.
        inner = _PARAMETER.sub(self._parameter, found.group(3))
        return found.group(1) + found.group(2) + b"=" + inner


def _decoded(value: bytes) -> bytes:
    """Percent-decoded until it stops changing (a few rounds: ``%2574`` is ``%74``),
    ``+`` as a space, as a query string is read."""
    value = unquote_to_bytes(value.replace(b"+", b" "))
    for _ in range(2):
        decoded = unquote_to_bytes(value)
        if decoded == value:
            break
        value = decoded
    return value


def loggable(value: str | None, limit: int = LOG_CHARS) -> str | None:
    """A string from outside as a log field: cut, and its control characters shown."""
    if value is None:
        return None
    cut = value[:limit]
    cut = cut.encode("unicode_escape").decode("ascii")[: limit * 2]
    return cut + "…" if len(value) > limit else cut


def _bounded(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every string field cut to MAX_FIELD_CHARS, a traceback to its head and tail."""
    for name, value in event.items():
        if not isinstance(value, str):
            continue
        if name == "exception":
            if len(value) > MAX_EXCEPTION_CHARS:
                half = MAX_EXCEPTION_CHARS // 2
                event[name] = f"{value[:half]}… ({len(value):,} characters) …{value[-half:]}"
        elif len(value) > MAX_FIELD_CHARS:
            event[name] = f"{value[:MAX_FIELD_CHARS]}… ({len(value):,} characters)"
    return event


class _NoQuery(logging.Filter):
    """uvicorn's request lines (``"WebSocket /v1/live?token=…"``, access lines) with
    the path's query dropped: the websocket takes its token there, and no query is
    worth a credential reaching the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn") and isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) and arg.startswith("/") else arg
                for arg in record.args
            )
        return True


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
            _bounded,
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
                _bounded,
                structlog.processors.JSONRenderer(serializer=_serialize_text),
            ],
        )
    )
    handler.addFilter(_NoQuery())
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
