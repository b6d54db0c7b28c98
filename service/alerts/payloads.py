"""One alert as each chat service wants it posted. Pure: an Alert in, JSON-ready out.

Each builder keeps within its service's documented limits (text lengths, number of
fields), because an over-long payload is refused whole (Slack answers 400
``invalid_blocks``, Discord 400, Teams and Google Chat drop the card): an alert
that cannot be shown in full is cut, never lost.

Alerts quote what senders and recipients chose (message ids, domains, subjects,
account names), so every text is escaped for the markup of the service it goes to:
shown as text, it cannot mention anyone (``<!channel>``, ``@everyone``,
``<users/all>``), link (``<url|text>``, ``[text](url)``, bare URLs) or format.
Slack blocks use ``plain_text``; its fallback ``text`` escapes ``& < >``; Discord
and Teams markdown characters are backslash-escaped (and Discord parses no
mentions); Google Chat card text is HTML-escaped.
"""

from __future__ import annotations

import html
import re
from typing import Any

from service.alerts.model import Alert, AlertState, Severity, alert_to_dict
from service.timestamps import format_ms

_COLOURS = {  # firing warning, firing critical, resolved
    Severity.WARNING: 0xD29922,
    Severity.CRITICAL: 0xF85149,
    None: 0x3FB950,
}
_MAX_EXAMPLES = 5


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Slack's and Google Chat's message-text formatting pairs *, _, ~ and ` around
# words; a zero-width space after each keeps the pair from forming.
_PAIRED = re.compile(r"([*_~`])")
_ZERO_WIDTH_SPACE = "\u200b"


def slack_text(text: str) -> str:
    """For Slack mrkdwn (the fallback ``text``): no links, mentions or formatting."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _defuse(escaped)


def _defuse(text: str) -> str:
    """No formatting pairs, and no URL that the client would link on sight."""
    text = _PAIRED.sub(r"\1" + _ZERO_WIDTH_SPACE, text)
    return text.replace("://", ":" + _ZERO_WIDTH_SPACE + "//")


# Inline markdown anywhere; block markup (lists, headings, quotes) at line starts.
_INLINE_MARKUP = re.compile(r"([\\*_~`|\[\]<])")
_LINE_MARKUP = re.compile(r"(?m)^(\s*)([-+#>]|\d+\.)")


def _markdown_text(text: str) -> str:
    escaped = _INLINE_MARKUP.sub(r"\\\1", text)
    # A URL is linked on sight; an escaped colon keeps it text.
    escaped = escaped.replace("://", "\\://")
    return _LINE_MARKUP.sub(r"\1\\\2", escaped)


def discord_text(text: str) -> str:
    """Discord markdown, escaped; ``@`` too (mentions are also switched off)."""
    return _markdown_text(text).replace("@", "\\@")


def teams_text(text: str) -> str:
    """Adaptive Card TextBlock markdown (bold, italic, lists, links), escaped."""
    return _markdown_text(text)


def google_chat_text(text: str) -> str:
    """Google Chat: card text is HTML (``<a>``, ``<b>``); message text has
    ``<users/all>`` mentions and ``<url|text>`` links and pairs formatting."""
    return _defuse(html.escape(text, quote=False))


def _colour(alert: Alert) -> int:
    return _COLOURS[None if alert.state is AlertState.RESOLVED else alert.severity]


def _facts(alert: Alert) -> list[tuple[str, str]]:
    """Figures, then the worst offenders, then example message ids, as (label, value)."""
    facts = list(alert.figures.items())
    facts += [(f"worst: {name}", value) for name, value in alert.worst.items()]
    for example in alert.examples[:_MAX_EXAMPLES]:
        value = example.message_id
        if example.recipient:
            value += f" ({example.recipient})"
        if example.detail:
            value += f": {example.detail}"
        if example.diagnosis:
            # What happened, in words: the on-call engineer reads it without a lookup.
            value += f" [{example.diagnosis.get('code')}] {example.diagnosis.get('summary')}"
        facts.append(("example", value))
    return facts


def _when(alert: Alert) -> str:
    if alert.state is AlertState.RESOLVED and alert.resolved_at is not None:
        return f"resolved {format_ms(alert.resolved_at)} (since {format_ms(alert.started_at)})"
    return f"since {format_ms(alert.started_at)}"


def slack(alert: Alert) -> dict[str, Any]:
    """Incoming webhook with Block Kit; ``text`` is the notification fallback."""
    facts = _facts(alert)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(alert.headline, 150)},
        {"type": "section", "text": _plain(alert.summary, 3000)},
    ]
    if facts:
        blocks.append(
            {
                "type": "section",
                "fields": [_plain(f"{label}\n{value}", 2000) for label, value in facts[:10]],
            }
        )
    blocks.append({"type": "context", "elements": [_plain(f"{alert.key} · {_when(alert)}", 3000)]})
    if alert.link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in ses-tracker"},
                        "url": alert.link,
                    }
                ],
            }
        )
    return {"text": _cut(slack_text(f"{alert.headline}: {alert.summary}"), 3000), "blocks": blocks}


def _plain(text: str, limit: int) -> dict[str, Any]:
    """A Slack plain_text object: shown as written, no mrkdwn, no emoji codes."""
    return {"type": "plain_text", "text": _cut(text, limit), "emoji": False}


def teams(alert: Alert) -> dict[str, Any]:
    """A Workflows ("When a Teams webhook request is received") message with an Adaptive Card."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": teams_text(alert.headline),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": "Good"
            if alert.state is AlertState.RESOLVED
            else ("Attention" if alert.severity is Severity.CRITICAL else "Warning"),
        },
        {"type": "TextBlock", "text": teams_text(alert.summary), "wrap": True},
    ]
    facts = _facts(alert)
    if facts:
        body.append(
            {
                "type": "FactSet",
                "facts": [{"title": teams_text(k), "value": teams_text(v)} for k, v in facts],
            }
        )
    body.append(
        {
            "type": "TextBlock",
            "text": teams_text(f"{alert.key} · {_when(alert)}"),
            "isSubtle": True,
            "wrap": True,
        }
    )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if alert.link:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open in ses-tracker", "url": alert.link}
        ]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def discord(alert: Alert) -> dict[str, Any]:
    """An execute-webhook body with one embed (title 256, description 4096, 25 fields)."""
    embed: dict[str, Any] = {
        "title": _cut(discord_text(alert.headline), 256),
        "description": _cut(discord_text(alert.summary), 4096),
        "color": _colour(alert),
        "fields": [
            {
                "name": _cut(discord_text(label), 256),
                "value": _cut(discord_text(value), 1024),
                "inline": not label.startswith("example"),
            }
            for label, value in _facts(alert)[:25]
        ],
        "footer": {"text": _cut(f"{alert.key} · {_when(alert)}", 2048)},
        "timestamp": format_ms(alert.resolved_at or alert.started_at),
    }
    if alert.link:
        embed["url"] = alert.link
    # Discord refuses an embed over 6,000 characters in all: drop fields until it fits.
    while _embed_size(embed) > 6000 and embed["fields"]:
        embed["fields"].pop()
    return {
        "content": _cut(discord_text(alert.headline), 2000),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }


def _embed_size(embed: dict[str, Any]) -> int:
    size = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    return size + sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])


def google_chat(alert: Alert) -> dict[str, Any]:
    """A Chat app incoming-webhook message: ``text`` plus a ``cardsV2`` card."""
    widgets: list[dict[str, Any]] = [
        {"textParagraph": {"text": _cut(html.escape(alert.summary, quote=False), 4000)}}
    ]
    widgets += [
        {
            "decoratedText": {
                "topLabel": html.escape(label, quote=False),
                "text": html.escape(value, quote=False),
                "wrapText": True,
            }
        }
        for label, value in _facts(alert)
    ]
    if alert.link:
        widgets.append(
            {
                "buttonList": {
                    "buttons": [
                        {
                            "text": "Open in ses-tracker",
                            "onClick": {"openLink": {"url": alert.link}},
                        }
                    ]
                }
            }
        )
    return {
        "text": _cut(google_chat_text(alert.headline), 4000),
        "cardsV2": [
            {
                "cardId": _cut(alert.key, 64),
                "card": {
                    "header": {
                        "title": _cut(alert.headline, 200),  # plain text, not markup
                        "subtitle": _when(alert),
                    },
                    "sections": [{"widgets": widgets}],
                },
            }
        ],
    }


def generic(alert: Alert) -> dict[str, Any]:
    """The signed JSON webhook (and ``GET /v1/alerts``): every field, nothing cut,
    times as ISO-8601 (see ``sinks.sign``)."""
    body = alert_to_dict(alert)
    body["started_at"] = format_ms(alert.started_at)
    body["resolved_at"] = None if alert.resolved_at is None else format_ms(alert.resolved_at)
    return body


BUILDERS = {
    "slack": slack,
    "teams": teams,
    "discord": discord,
    "googlechat": google_chat,
    "webhook": generic,
}
