"""Alert rules: what can fire, read from ``SES_TRACKER_ALERT_RULES`` or built in.

A rules file is YAML::

    timing:                    # Alertmanager's defaults
      group_wait_s: 30         # a new alert waits this long before its first notice
      group_interval_s: 300    # news about a firing alert (it changed, it cleared)
      repeat_interval_s: 14400 # a still-firing alert is repeated this often
      evaluate_every_s: 10
    rules:
      - name: bounce-rate
        kind: bounce_rate      # or complaint_rate
        window_s: 3600
        warn: 0.02
        critical: 0.04
        min_sent: 200          # no verdict on fewer recipients than this
        by: global             # or a dimension (README, Dimensions): each of its
                               # groups on its own (domain, provider,
                               # configuration_set, identity, tag:NAME)

Each rule's ``name`` is its alert key: one rule makes at most one alert, which lists
every domain (or delay type, or account) it is about. Every mistake is reported at
start-up with the file, line and field (``RulesError``); nothing is half-loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service import yamlfile
from service.alerts.model import Severity
from service.dimensions import Dimensions
from service.stats import BUCKET_S, LATENCY_KINDS, MAX_WINDOW_S

Window = Annotated[int, Field(ge=BUCKET_S, le=MAX_WINDOW_S)]
# "global", or a dimension's name (service.dimensions); tag:NAME is checked against
# SES_TRACKER_TAG_DIMENSIONS where the rules are loaded.
Scope = Annotated[
    str,
    Field(pattern=r"^(global|configuration_set|identity|domain|provider|tag:[^=|\s]{1,128})$"),
]


class RulesError(ValueError):
    """A rules file that cannot be used; the message names file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timing(_Strict):
    group_wait_s: float = Field(30, ge=0)
    group_interval_s: float = Field(300, ge=0)
    repeat_interval_s: float = Field(4 * 3600, gt=0)
    evaluate_every_s: float = Field(10, ge=0.1, le=300)


class _Rule(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class RateRule(_Rule):
    """Bounces or complaints per recipient seen, over a window, above a threshold.

    SES puts an account under review at 5% bounces or 0.1% complaints (measured over
    a longer period); the defaults warn well before either.
    """

    kind: Literal["bounce_rate", "complaint_rate"]
    window_s: Window = 3600
    warn: float = Field(gt=0, le=1)
    critical: float | None = Field(None, gt=0, le=1)
    min_sent: int = Field(100, ge=1)
    by: Scope = "global"

    @model_validator(mode="after")
    def _critical_above_warn(self) -> RateRule:
        if self.critical is not None and self.critical <= self.warn:
            raise ValueError("critical must be above warn")
        return self


# The sketches service.stats keeps (Literal of a tuple: the same names, one list).
LatencyKind = Literal[LATENCY_KINDS]  # type: ignore[valid-type]


class LatencyRule(_Rule):
    """A latency percentile (from the stats sketches) above a threshold."""

    kind: Literal["latency"]
    latency: LatencyKind = "send_to_delivery"
    percentile: float = Field(95, gt=0, lt=100)
    above_ms: int = Field(gt=0)
    critical_ms: int | None = Field(None, gt=0)
    window_s: Window = 300
    min_count: int = Field(20, ge=1)
    by: Scope = "global"

    @model_validator(mode="after")
    def _critical_above_warn(self) -> LatencyRule:
        if self.critical_ms is not None and self.critical_ms <= self.above_ms:
            raise ValueError("critical_ms must be above above_ms")
        return self


class DelaySpikeRule(_Rule):
    """More DeliveryDelays than usual, per delay type and per recipient domain.

    Fires when the last ``window_s`` holds at least ``min_delays`` delays and
    ``factor`` times what the rest of ``baseline_s`` averaged per window.
    """

    kind: Literal["delay_spike"]
    window_s: Window = 300
    baseline_s: Window = 3600
    min_delays: int = Field(20, ge=1)
    factor: float = Field(3.0, ge=1)
    severity: Severity = Severity.WARNING

    @model_validator(mode="after")
    def _baseline_longer(self) -> DelaySpikeRule:
        if self.baseline_s < 2 * self.window_s:
            raise ValueError("baseline_s must be at least twice window_s")
        return self


class StatusCountRule(_Rule):
    """Any recipient reaching a status in the window: rejects and rendering failures
    mean SES dropped the email without trying to deliver it."""

    kind: Literal["status_count"]
    status: Literal["rejected", "rendering_failed", "bounced", "complained"]
    window_s: Window = 300
    min_count: int = Field(1, ge=1)
    severity: Severity = Severity.CRITICAL


class SendingDisabledRule(_Rule):
    """EventBridge said sending is paused for the account: always critical."""

    kind: Literal["sending_disabled"]


class OverdueRule(_Rule):
    """Recipients still sent/delayed ``SES_TRACKER_OVERDUE_AFTER_S`` after the send."""

    kind: Literal["overdue"]
    min_count: int = Field(1, ge=1)
    severity: Severity = Severity.WARNING


class TrackerRule(_Rule):
    """ses-tracker watching itself: a source that cannot reach its broker or queue,
    a stalled or far-behind partition, dead letters piling up, the store nearly
    full or evicting, alert notices that no sink has taken for a while."""

    kind: Literal["tracker"]
    window_s: Window = 300  # for dead letters and evictions
    max_lag_records: int = Field(100_000, ge=1)
    max_event_lag_s: int = Field(1_800, ge=1)  # a source reading events this old
    min_dead_letters: int = Field(1, ge=1)
    memory_ratio: float = Field(0.9, gt=0, le=1)
    outbox_age_s: int = Field(600, ge=1)
    severity: Severity = Severity.WARNING


Rule = Annotated[
    RateRule
    | LatencyRule
    | DelaySpikeRule
    | StatusCountRule
    | SendingDisabledRule
    | OverdueRule
    | TrackerRule,
    Field(discriminator="kind"),
]


class RuleSet(_Strict):
    timing: Timing = Timing()
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return self


DEFAULT_RULES: dict[str, Any] = {
    "rules": [
        {"name": "bounce-rate", "kind": "bounce_rate", "warn": 0.02, "critical": 0.04,
         "min_sent": 200},
        {"name": "bounce-rate-by-domain", "kind": "bounce_rate", "warn": 0.05, "critical": 0.10,
         "min_sent": 100, "by": "domain"},
        {"name": "complaint-rate", "kind": "complaint_rate", "warn": 0.0005, "critical": 0.0008,
         "min_sent": 1000},
        {"name": "slow-delivery", "kind": "latency", "latency": "send_to_delivery",
         "percentile": 95, "above_ms": 60_000, "window_s": 300, "min_count": 20, "by": "domain"},
        {"name": "delay-spike", "kind": "delay_spike"},
        {"name": "rejects", "kind": "status_count", "status": "rejected"},
        {"name": "rendering-failures", "kind": "status_count", "status": "rendering_failed"},
        {"name": "sending-disabled", "kind": "sending_disabled"},
        {"name": "overdue", "kind": "overdue"},
        {"name": "tracker-health", "kind": "tracker"},
    ]
}  # fmt: skip


def default_rules() -> RuleSet:
    return RuleSet.model_validate(DEFAULT_RULES)


def load_rules(path: Path | None, dimensions: Dimensions | None = None) -> RuleSet:
    """The rules in ``path``, or the built-in defaults when it is None.

    With ``dimensions``, a rule broken down ``by`` a tag must name one of its tags.
    """
    if path is None:
        return default_rules()
    try:
        text = yamlfile.read(path, "rules")
    except yamlfile.YamlFileError as exc:
        raise RulesError(str(exc)) from None
    return parse_rules(text, str(path), dimensions)


def parse_rules(
    text: str, origin: str = "<rules>", dimensions: Dimensions | None = None
) -> RuleSet:
    try:
        data, tree = yamlfile.parse(text, origin)
    except yamlfile.YamlFileError as exc:
        raise RulesError(str(exc)) from None
    if not isinstance(data, dict):
        raise RulesError(f"{origin}: expected a mapping with a 'rules' list")
    # Names are checked here too, so a duplicate is reported with the field errors
    # in one pass, not only once those are fixed.
    problems = _duplicate_names(data, tree, origin)
    try:
        rules = RuleSet.model_validate(data)
    except ValidationError as exc:
        described = yamlfile.describe(exc, tree, origin, _is_field)
        problems += [line for line in described if "is used twice" not in line]
    else:
        if dimensions is not None:
            problems += _unknown_dimensions(rules, dimensions, tree, origin)
    if problems:
        raise RulesError("\n".join(problems))
    return rules


def _unknown_dimensions(
    rules: RuleSet, dimensions: Dimensions, tree: yaml.Node | None, origin: str
) -> list[str]:
    problems = []
    for index, rule in enumerate(rules.rules):
        by = getattr(rule, "by", "global")
        if by != "global" and by not in dimensions.names:
            _, line = yamlfile.locate(tree, ("rules", index, "by"))
            problems.append(
                f"{origin}:{line}: rules[{index}].by: {by!r} is not a tag listed in "
                "SES_TRACKER_TAG_DIMENSIONS"
            )
    return problems


def _duplicate_names(data: dict[str, Any], tree: yaml.Node | None, origin: str) -> list[str]:
    rules = data.get("rules")
    if not isinstance(rules, list):
        return []
    problems: list[str] = []
    first: dict[str, int] = {}
    for index, rule in enumerate(rules):
        name = rule.get("name") if isinstance(rule, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            _, line = yamlfile.locate(tree, ("rules", index, "name"))
            problems.append(
                f"{origin}:{line}: rules[{index}].name: rule name {name!r} is used twice "
                f"(first as rules[{first[name]}])"
            )
        else:
            first[name] = index
    return problems


_FIELDS = {
    name
    for model in (Timing, RateRule, LatencyRule, DelaySpikeRule, StatusCountRule,
                  SendingDisabledRule, OverdueRule, RuleSet)
    for name in model.model_fields
}  # fmt: skip


def _is_field(part: str) -> bool:
    return part in _FIELDS
