"""What each chat service requires of a webhook body, as checks a test receiver runs.

Written from the services' documentation (Slack Block Kit, Adaptive Cards for Teams
Workflows, Discord execute-webhook, Google Chat cardsV2); each raises
AssertionError naming the rule a payload breaks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from service.alerts.model import Alert, AlertState, Example, Severity
from service.alerts.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.support.receiver import Received


def sample_alert(**changes: Any) -> Alert:
    """A bounce-rate alert with every part filled in; ``changes`` override fields."""
    fields: dict[str, Any] = dict(
        key="bounce_rate|gmail.com",
        rule="bounce_rate",
        severity=Severity.WARNING,
        state=AlertState.FIRING,
        title="Bounce rate 6.2% at gmail.com",
        summary="31 of 500 recipients bounced in the last 5 minutes (threshold 2%).",
        started_at=1_700_000_000_000,
        figures={"bounce rate": "6.2% (31 of 500)", "window": "5 min"},
        worst={"gmail.com": "6.2%"},
        examples=(Example("0100018b-aaaa", "a@gmail.com", "550 5.1.1 user unknown"),),
        link="http://127.0.0.1:8000/?message=0100018b-aaaa",
    )
    fields.update(changes)
    return Alert(**fields)


def check_slack(body: dict[str, Any]) -> None:
    assert isinstance(body.get("text"), str) and body["text"], "slack: text fallback required"
    blocks = body["blocks"]
    assert 1 <= len(blocks) <= 50, "slack: 1..50 blocks"
    for block in blocks:
        kind = block["type"]
        if kind == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert "text" in block or "fields" in block, "slack: section needs text or fields"
            if "text" in block:
                assert len(block["text"]["text"]) <= 3000
            for item in block.get("fields", []):
                assert item["type"] in ("mrkdwn", "plain_text") and len(item["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10, "slack: at most 10 fields"
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
        elif kind == "actions":
            for element in block["elements"]:
                assert element["type"] == "button" and element["url"].startswith("http")
                assert len(element["text"]["text"]) <= 75
        else:
            raise AssertionError(f"slack: unexpected block {kind}")


def check_teams(body: dict[str, Any]) -> None:
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] in ("1.2", "1.3", "1.4", "1.5")
    assert card["body"], "teams: card body required"
    for element in card["body"]:
        assert element["type"] in ("TextBlock", "FactSet")
        if element["type"] == "TextBlock":
            assert isinstance(element["text"], str) and element["text"]
        else:
            assert all(set(f) == {"title", "value"} for f in element["facts"])
    for action in card.get("actions", []):
        assert action["type"] == "Action.OpenUrl" and action["url"].startswith("http")


def check_discord(body: dict[str, Any]) -> None:
    assert body.get("content") or body.get("embeds"), "discord: content or embeds required"
    assert len(body.get("content", "")) <= 2000
    embeds = body.get("embeds", [])
    assert len(embeds) <= 10
    for embed in embeds:
        assert len(embed.get("title", "")) <= 256 and len(embed.get("description", "")) <= 4096
        assert isinstance(embed.get("color", 0), int) and 0 <= embed.get("color", 0) <= 0xFFFFFF
        fields = embed.get("fields", [])
        assert len(fields) <= 25
        for field in fields:
            assert field["name"] and len(field["name"]) <= 256
            assert field["value"] and len(field["value"]) <= 1024
        total = len(embed.get("title", "")) + len(embed.get("description", ""))
        total += len(embed.get("footer", {}).get("text", ""))
        total += sum(len(f["name"]) + len(f["value"]) for f in fields)
        assert total <= 6000, "discord: embed over 6000 characters"


def check_google_chat(body: dict[str, Any]) -> None:
    assert body.get("text") or body.get("cardsV2"), "google chat: text or cardsV2 required"
    for entry in body.get("cardsV2", []):
        assert entry["cardId"], "google chat: cardId required"
        card = entry["card"]
        assert card["header"]["title"]
        for section in card["sections"]:
            for widget in section["widgets"]:
                (kind,) = widget.keys()
                assert kind in ("textParagraph", "decoratedText", "buttonList")
                if kind == "buttonList":
                    for button in widget[kind]["buttons"]:
                        assert button["onClick"]["openLink"]["url"].startswith("http")


CHECKS = {
    "slack": check_slack,
    "teams": check_teams,
    "discord": check_discord,
    "googlechat": check_google_chat,
}


def check_signed(request: Received, secret: bytes) -> None:
    """A generic webhook: signed over timestamp and body, with every alert field."""
    timestamp = int(request.headers[TIMESTAMP_HEADER.lower()])
    signature = request.headers[SIGNATURE_HEADER.lower()]
    assert verify(secret, timestamp, request.body, signature, int(time.time())), "bad signature"
    body = request.json()
    for name in ("key", "rule", "severity", "state", "title", "summary", "started_at", "link"):
        assert name in body, f"webhook: {name} missing"


def checker(secret: bytes) -> Callable[[Received], None]:
    """A receiver check routing by path: ``/<kind>`` gets that service's checks."""

    def check(request: Received) -> None:
        kind = request.path.strip("/")
        if kind == "webhook":
            check_signed(request, secret)
        else:
            CHECKS[kind](request.json())

    return check
