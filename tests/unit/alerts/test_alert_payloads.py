"""Chat payloads meet what each service requires, however long the alert."""

from __future__ import annotations

import pytest

from service.alerts import payloads
from service.alerts.model import AlertState, Example, Severity
from tests.support.chat import CHECKS, sample_alert

T = 1_700_000_000_000


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_each_payload_meets_its_service_rules(kind: str) -> None:
    body = payloads.BUILDERS[kind](sample_alert())
    CHECKS[kind](body)
    text = str(body)
    # What fired, the figures, an example id and the link reach every service.
    for needed in (
        "Bounce rate 6.2% at gmail.com",
        "31 of 500",
        "0100018b-aaaa",
        "127.0.0.1:8000",
    ):
        assert needed in text, (kind, needed)


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_oversized_alerts_are_cut_to_fit(kind: str) -> None:
    huge = sample_alert(
        title="T" * 1000,
        summary="S" * 10_000,
        figures={f"figure {n}": "v" * 3000 for n in range(40)},
        examples=tuple(Example(f"id-{n}", "r@x.com", "d" * 3000) for n in range(20)),
    )
    CHECKS[kind](payloads.BUILDERS[kind](huge))


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_resolved_alerts_say_so_and_carry_no_link_when_none(kind: str) -> None:
    resolved = sample_alert(state=AlertState.RESOLVED, resolved_at=T + 600_000, link=None)
    body = payloads.BUILDERS[kind](resolved)
    CHECKS[kind](body)
    assert "RESOLVED" in str(body)
    assert "http" not in str(body).replace("http://adaptivecards.io", "")


def test_generic_payload_keeps_everything() -> None:
    alert = sample_alert(severity=Severity.CRITICAL)
    body = payloads.generic(alert)
    assert body["severity"] == "critical" and body["state"] == "firing"
    assert body["started_at"] == "2023-11-14T22:13:20.000Z" and body["resolved_at"] is None
    assert body["examples"] == [
        {
            "message_id": "0100018b-aaaa",
            "recipient": "a@gmail.com",
            "detail": "550 5.1.1 user unknown",
            "diagnosis": None,
        }
    ]


# --- 8. attacker-chosen text shows as text ---------------------------------------------

HOSTILE = (
    "<!channel> @everyone <https://evil.example|click> [x](https://evil.example) *b* <users/all>"
)


def hostile_alert():
    return sample_alert(
        title=f"Bounce rate at {HOSTILE}",
        summary=f"Recipients at {HOSTILE} bounced.",
        figures={f"at {HOSTILE}": HOSTILE},
        worst={HOSTILE: "9%"},
        examples=(Example(HOSTILE, f"{HOSTILE}@x.com", HOSTILE),),
    )


def _strings(value: object, path: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [s for key, child in value.items() for s in _strings(child, f"{path}.{key}")]
    if isinstance(value, list):
        return [s for index, child in enumerate(value) for s in _strings(child, f"{path}[{index}]")]
    return [(path, value)] if isinstance(value, str) else []


def test_slack_shows_attacker_text_as_text() -> None:
    body = payloads.slack(hostile_alert())
    for block in body["blocks"]:
        for part in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(part, dict) and "type" in part and part["type"] != "button":
                assert part["type"] == "plain_text", block  # never mrkdwn
    fallback = body["text"]
    for raw in ("<!channel>", "<https://", "<users/all>", "*b*", "https://evil"):
        assert raw not in fallback


@pytest.mark.parametrize("kind", ["discord", "teams"])
def test_markdown_services_get_escaped_markup(kind: str) -> None:
    body = payloads.BUILDERS[kind](hostile_alert())
    for path, text in _strings(body):
        if "evil" not in text:
            continue
        assert "[x](" not in text and "](https://" not in text, path
        assert "https://evil" not in text, path  # not linked on sight
        assert "*b*" not in text, path
        if kind == "discord":
            assert "@everyone" not in text.replace("\\@everyone", ""), path
    if kind == "discord":
        assert body["allowed_mentions"] == {"parse": []}


def test_google_chat_escapes_html_and_mentions() -> None:
    body = payloads.google_chat(hostile_alert())
    assert "<users/all>" not in body["text"] and "<!channel>" not in body["text"]
    card = body["cardsV2"][0]["card"]
    for path, text in _strings(card["sections"]):
        if "evil" in text:
            assert "<" not in text and ">" not in text, path
