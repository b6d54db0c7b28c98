"""service.logs: redaction of rendered lines, and strings from outside kept short."""

from __future__ import annotations

import logging

import pytest

from service.logs import (
    MAX_EXCEPTION_CHARS,
    MAX_FIELD_CHARS,
    Redactor,
    _bounded,
    _NoQuery,
    loggable,
)

SECRET = "tok-Zq81-api-secret/+="


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"/v1/live?%74oken=abc", b"/v1/live?%74oken=[redacted]"),
        (b"/v1/live?x=1&%54OKEN=abc&y=2", b"/v1/live?x=1&%54OKEN=[redacted]&y=2"),
        (b"/v1/live?%2574oken=abc", b"/v1/live?%2574oken=[redacted]"),
        (b"/v1/live?token=abc", b"/v1/live?token=[redacted]"),
        (b"/hook?k%65y=abc&page=2", b"/hook?k%65y=[redacted]&page=2"),
        (b"/a?x=1;token=abc", b"/a?x=1;token=[redacted]"),
        (b"/v1/history?step=day&days=90", b"/v1/history?step=day&days=90"),
    ],
)
def test_a_credential_named_query_value_is_redacted_whatever_encodes_its_name(
    line: bytes, expected: bytes
) -> None:
    assert Redactor()(line) == expected


def test_a_known_secret_is_redacted_under_any_name_once_decoded() -> None:
    redact = Redactor([SECRET])
    assert SECRET.encode()[1:] not in redact(b"/a?q=%74ok-Zq81-api-secret/%2B=")
    assert redact(b'{"path":"/a?q=tok-Zq81-api-secret%2F%2B%3D"}') == b'{"path":"/a?q=[redacted]"}'


def test_a_string_from_outside_is_cut_with_its_control_characters_shown() -> None:
    assert loggable("a\nb\x1b[31m" + "z" * 5_000) == "a\\nb\\x1b[31m" + "z" * 56 + "…"
    assert loggable("t" * 1_000_000, 256) == "t" * 256 + "…"
    assert loggable("short") == "short" and loggable(None) is None


def test_every_rendered_field_is_bounded_and_a_traceback_keeps_its_tail() -> None:
    event = _bounded(None, "warning", {"event": "x", "big": "b" * 1_000_000, "n": 5})
    assert len(event["big"]) < MAX_FIELD_CHARS + 40 and event["n"] == 5
    trace = _bounded(None, "error", {"exception": "head" + "." * 1_000_000 + "ValueError: end"})
    assert len(trace["exception"]) < MAX_EXCEPTION_CHARS + 60
    assert trace["exception"].startswith("head") and trace["exception"].endswith("ValueError: end")


def test_uvicorn_request_lines_lose_their_query() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/v1/live?%74oken=abc"),
        None,
    )
    assert _NoQuery().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "WebSocket /v1/live" [accepted]'
