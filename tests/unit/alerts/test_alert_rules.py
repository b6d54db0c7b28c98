"""Alert rules files: defaults, every kind, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.alerts.rules import (
    DEFAULT_RULES,
    RateRule,
    RulesError,
    default_rules,
    load_rules,
    parse_rules,
)


def test_defaults_cover_every_kind_and_warn_before_ses_review_thresholds() -> None:
    rules = {rule.name: rule for rule in default_rules().rules}
    assert {rule.kind for rule in rules.values()} == {
        "bounce_rate", "complaint_rate", "latency", "delay_spike", "status_count",
        "sending_disabled", "overdue", "tracker",
    }  # fmt: skip
    bounce, complaint = rules["bounce-rate"], rules["complaint-rate"]
    assert isinstance(bounce, RateRule) and isinstance(complaint, RateRule)
    assert bounce.critical is not None and bounce.critical < 0.05  # SES reviews at 5%
    assert complaint.critical is not None and complaint.critical < 0.001  # and at 0.1%
    assert default_rules().timing.group_wait_s == 30
    assert default_rules().timing.repeat_interval_s == 4 * 3600
    assert len(DEFAULT_RULES["rules"]) == len(rules)


def test_a_file_with_every_kind_loads(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """
timing: {group_wait_s: 0, group_interval_s: 1, repeat_interval_s: 60, evaluate_every_s: 0.5}
rules:
  - {name: b, kind: bounce_rate, warn: 0.01, by: domain, min_sent: 5}
  - {name: c, kind: complaint_rate, warn: 0.001}
  - {name: l, kind: latency, latency: ingest_lag, percentile: 99.9, above_ms: 500}
  - {name: d, kind: delay_spike, window_s: 60, baseline_s: 600, factor: 2}
  - {name: r, kind: status_count, status: rejected, severity: warning}
  - {name: s, kind: sending_disabled}
  - {name: o, kind: overdue, min_count: 3}
"""
    )
    loaded = load_rules(path)
    assert [rule.name for rule in loaded.rules] == list("bcldrso")
    assert loaded.timing.evaluate_every_s == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules:\n  - name: a\n    kind: bounce_rate\n    warn: 0.02\n    window_s: 7200\n",
            "f.yaml:5: rules[0].window_s: Input should be less than or equal to 3600",
        ),
        (
            "rules:\n  - name: a\n    kind: latency\n    above_ms: 10\n    window_s: 1\n",
            "f.yaml:5: rules[0].window_s: Input should be greater than or equal to 10",
        ),
        (  # the field has the name of the rule's kind
            "rules:\n  - name: a\n    kind: latency\n    above_ms: 5\n    latency: slow\n",
            "f.yaml:5: rules[0].latency: Input should be 'send_to_delivery'",
        ),
        (
            "rules:\n  - {name: a, kind: bounce_rate}\n",
            "f.yaml:2: rules[0].warn: Field required",
        ),
        (
            "rules:\n  - name: a\n    kind: overdue\n    colour: red\n",
            "f.yaml:4: rules[0].colour: Extra inputs are not permitted",
        ),
        (
            "rules:\n  - name: a\n    kind: nope\n",
            "f.yaml:2: rules[0]: Input tag 'nope' found using 'kind' does not match",
        ),
        (
            "rules:\n  - {name: a, kind: bounce_rate, warn: 0.05, critical: 0.01}\n",
            "f.yaml:2: rules[0]: critical must be above warn",
        ),
        (
            "timing:\n  group_wait_s: -1\nrules: []\n",
            "f.yaml:2: timing.group_wait_s: Input should be greater than or equal to 0",
        ),
        (
            "rules:\n  - {name: a, kind: overdue}\n  - {name: a, kind: overdue}\n",
            "f.yaml:3: rules[1].name: rule name 'a' is used twice (first as rules[0])",
        ),
        (
            "rules:\n  - {name: Bad Name, kind: overdue}\n",
            "f.yaml:2: rules[0].name: String should match pattern",
        ),
        ("rules: [\n  {name: a\n", "f.yaml:3: not valid YAML"),
        ("- just a list\n", "f.yaml: expected a mapping with a 'rules' list"),
    ],
)
def test_errors_name_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "f.yaml")
    assert expected in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    text = "rules:\n  - {name: a, kind: bounce_rate}\n  - {name: b, kind: latency}\n"
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "f.yaml")
    assert str(caught.value).splitlines() == [
        "f.yaml:2: rules[0].warn: Field required",
        "f.yaml:3: rules[1].above_ms: Field required",
    ]


def test_a_duplicate_name_is_reported_with_the_field_errors() -> None:
    text = "rules:\n  - {name: a, kind: bounce_rate}\n  - {name: a, kind: overdue}\n"
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "f.yaml")
    assert str(caught.value).splitlines() == [
        "f.yaml:3: rules[1].name: rule name 'a' is used twice (first as rules[0])",
        "f.yaml:2: rules[0].warn: Field required",
    ]


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"missing\.yaml: cannot read"):
        load_rules(tmp_path / "missing.yaml")


def test_a_rule_by_a_tag_must_name_a_configured_tag_dimension() -> None:
    from service.dimensions import Dimensions

    text = "rules:\n  - {name: b, kind: bounce_rate, warn: 0.05, by: 'tag:campaign'}\n"
    assert parse_rules(text, "r.yaml", Dimensions(tags=("campaign",))).rules[0].by == "tag:campaign"
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "r.yaml", Dimensions())
    assert str(caught.value) == (
        "r.yaml:2: rules[0].by: 'tag:campaign' is not a tag listed in SES_TRACKER_TAG_DIMENSIONS"
    )
    with pytest.raises(RulesError, match=r"rules\[0\]\.by"):
        parse_rules(text.replace("tag:campaign", "recipient"), "r.yaml")
