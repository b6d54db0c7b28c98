"""Alert settings read and checked together, so start-up fails once with every reason."""

from __future__ import annotations

from dataclasses import dataclass

from service.alerts.accounts import AccountPolicy
from service.alerts.rules import RulesError, RuleSet, load_rules
from service.alerts.sinks import Sink, SinkConfigError, parse_webhooks
from service.settings import Settings


class AlertConfigError(ValueError):
    """Alert settings that cannot work; the message names the setting, line or field."""


@dataclass(frozen=True, slots=True)
class AlertConfig:
    rules: RuleSet
    sinks: list[Sink]
    secret: bytes | None  # signs generic webhooks
    # Whose account events count (SES_TRACKER_ACCOUNT_IDS), checked with the settings.
    accounts: AccountPolicy


def alert_config(settings: Settings) -> AlertConfig:
    problems: list[str] = []
    rules = sinks = None
    try:
        rules = load_rules(settings.alert_rules, settings.dimensions())
    except RulesError as exc:
        problems.append(str(exc))
    try:
        sinks = parse_webhooks(settings.alert_webhooks)
    except SinkConfigError as exc:
        problems.append(str(exc))
    secret = settings.alert_webhook_secret
    if sinks and secret is None and any(sink.kind == "webhook" for sink in sinks):
        problems.append(
            "SES_TRACKER_ALERT_WEBHOOKS has a 'webhook' entry, so SES_TRACKER_ALERT_WEBHOOK_SECRET"
            " must be set: generic webhooks are always signed"
        )
    if secret is not None and len(secret.get_secret_value()) < 16:
        problems.append("SES_TRACKER_ALERT_WEBHOOK_SECRET: use at least 16 characters")
    if problems or rules is None or sinks is None:
        raise AlertConfigError("\n".join(problems))
    return AlertConfig(
        rules,
        sinks,
        None if secret is None else secret.get_secret_value().encode(),
        settings.account_policy(),
    )
