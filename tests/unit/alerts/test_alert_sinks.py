"""SES_TRACKER_ALERT_WEBHOOKS parsing and the generic webhook's signature."""

from __future__ import annotations

import pytest

from service.alerts.sinks import SinkConfigError, parse_webhooks, sign, verify

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


def test_every_kind_parses_and_prints_without_its_url() -> None:
    sinks = parse_webhooks(
        f"slack={SLACK}, teams=https://prod-01.westus.logic.azure.com:443/workflows/abc,"
        "discord=https://discord.com/api/webhooks/1/tok,"
        "googlechat=https://chat.googleapis.com/v1/spaces/AAA/messages?key=k&token=t,"
        "webhook=https://alerts.example.com/ses , "
    )
    assert [s.kind for s in sinks] == ["slack", "teams", "discord", "googlechat", "webhook"]
    assert sinks[1].name == "teams:prod-01.westus.logic.azure.com:443"
    assert "XXXXSECRET" not in repr(sinks) and "XXXXSECRET" not in sinks[0].name


def test_unset_means_no_sinks() -> None:
    assert parse_webhooks(None) == [] and parse_webhooks(" ") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slack", "entry 1: expected kind=url"),
        (f"slack={SLACK},pager=https://x.example/", "entry 2: unknown kind 'pager'"),
        ("slack=http://hooks.slack.com/services/x", "entry 1 (slack): URL must be https"),
        ("webhook=https://user:pw@x.example/", "must not carry a user or password"),
        ("discord=https://hooks.slack.com/services/x", "host hooks.slack.com is not where discord"),
        ("discord=https://discord.com/channels/1", "path must start with /api/webhooks/"),
        ("webhook=not a url", "URL has no host"),
        ("webhook=https://x.example:99999/", "not a URL"),
        (f"slack={SLACK},slack={SLACK}", "listed twice"),
    ],
)
def test_bad_entries_are_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(
        SinkConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as info:
        parse_webhooks(text)
    assert "XXXXSECRET" not in str(info.value)


def test_loopback_receivers_may_use_plain_http() -> None:
    (sink,) = parse_webhooks("slack=http://127.0.0.1:8123/slack")
    assert sink.host == "127.0.0.1:8123"


def test_signature_verifies_and_refuses_tampering_and_replays() -> None:
    secret, body, ts = b"s3cret", b'{"key":"k"}', 1_700_000_000
    signature = sign(secret, ts, body)
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert verify(secret, ts, body, signature, now_s=ts + 10)
    assert not verify(secret, ts, body + b" ", signature, now_s=ts)
    assert not verify(b"other", ts, body, signature, now_s=ts)
    assert not verify(secret, ts, body, signature, now_s=ts + 301)
