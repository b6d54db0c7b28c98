"""Whose account events count, how many accounts are kept, and bounded notices (#23.8)."""

from __future__ import annotations

import orjson
import pytest

from service.alerts.accounts import (
    MAX_ACCOUNT_IDS,
    AccountIdsError,
    AccountLimits,
    AccountPolicy,
    Dropped,
    clamped,
    loggable,
    parse_account_ids,
    to_forget,
)
from service.alerts.bounds import bounded
from service.alerts.evaluate import AccountStatus, Inputs, evaluate
from service.alerts.lifecycle import Finding
from service.alerts.model import Example, Severity
from service.alerts.rules import parse_rules
from service.settings import SettingsError, load_settings

NOW = 1_800_000_000_000


def test_account_ids_are_twelve_digits_separated_by_commas() -> None:
    assert parse_account_ids(" 123456789012 ,210987654321,") == {"123456789012", "210987654321"}
    assert parse_account_ids(None) is None
    assert parse_account_ids(" , ") is None


@pytest.mark.parametrize("value", ["12345678901", "1234567890123", "123456789012,abc", "*"])
def test_a_value_that_is_not_an_account_id_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(AccountIdsError) as raised:
        parse_account_ids(value)
    assert "12-digit" in str(raised.value) and value not in str(raised.value)


def test_more_account_ids_than_the_store_keeps_sensibly_is_refused() -> None:
    many = ",".join(f"{n:012d}" for n in range(MAX_ACCOUNT_IDS + 1))
    with pytest.raises(AccountIdsError):
        parse_account_ids(many)


def test_a_bad_account_ids_setting_is_a_settings_error_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, account_ids="123456789012,12345")
    assert raised.value.problems[0].startswith("SES_TRACKER_ACCOUNT_IDS: ")
    policy = load_settings(_env_file=None, account_ids="123456789012").account_policy()
    assert policy.allowed == {"123456789012"}
    assert policy.limits == AccountLimits(keep=1, ttl_ms=None)


def test_the_policy_counts_listed_accounts_only_and_well_formed_ones_when_unset() -> None:
    listed = AccountPolicy.of("123456789012")
    assert listed.refuses("123456789012") is None
    assert listed.refuses("210987654321") is Dropped.NOT_LISTED
    anyone = AccountPolicy()
    assert anyone.refuses("210987654321") is None
    for bad in (None, "", "12345678901x", "<!channel>", "1" * 5_000):
        assert anyone.refuses(bad) is Dropped.NOT_AN_ACCOUNT
        assert listed.refuses(bad) is Dropped.NOT_AN_ACCOUNT
    assert anyone.limits == AccountLimits(keep=20)


def test_an_account_status_dated_past_the_clock_is_dated_now() -> None:
    tomorrow = AccountStatus(False, NOW + 23 * 3_600_000, "Sending Status Disabled")
    assert clamped(tomorrow, NOW).at == NOW
    earlier = AccountStatus(True, NOW - 5, "Sending Status Enabled")
    assert clamped(earlier, NOW) is earlier


def test_past_the_limit_the_least_recently_seen_running_accounts_go_first() -> None:
    limits = AccountLimits(keep=3, ttl_ms=1_000)
    entries = {
        "paused-old": (NOW - 900, True),
        "running-old": (NOW - 800, False),
        "running-new": (NOW - 10, False),
        "paused-new": (NOW - 5, True),
        "expired": (NOW - 1_000, True),
    }
    assert to_forget(entries, limits, NOW) == ["expired", "running-old"]
    assert to_forget(entries, AccountLimits(keep=1, ttl_ms=None), NOW) == [
        "running-old",
        "running-new",
        "expired",
        "paused-old",
    ]


def test_a_paused_notice_names_the_first_five_accounts_and_a_count() -> None:
    rules = parse_rules("rules:\n  - {name: paused, kind: sending_disabled}\n").rules
    accounts = {
        f"{n:012d}": AccountStatus(False, NOW, "Sending Status Disabled") for n in range(300)
    }
    finding = evaluate(rules, Inputs(NOW, {}, accounts=accounts))["paused"]
    assert finding is not None
    shown = bounded(finding)
    assert shown.title == (
        "SES sending is paused for 300 accounts: 000000000000, 000000000001, "
        "000000000002, 000000000003, 000000000004 and 295 more"
    )
    assert list(shown.figures)[-1] == "more accounts" and len(shown.figures) == 6
    assert shown.subjects == finding.subjects  # news is still told by every account
    few = {"123456789012": AccountStatus(False, NOW, "Sending Status Disabled")}
    one = evaluate(rules, Inputs(NOW, {}, accounts=few))["paused"]
    assert one is not None and bounded(one) is one


def test_every_notice_is_cut_to_a_bounded_size() -> None:
    huge = "x" * 100_000
    finding = Finding(
        rule="r",
        kind="bounce_rate",
        severity=Severity.WARNING,
        title=huge,
        summary=huge,
        subjects=frozenset({"a"}),
        figures={f"{n}{huge}": huge for n in range(1_000)},
        worst={f"d{n}": huge for n in range(1_000)},
        examples=tuple(Example(huge, huge, huge) for _ in range(100)),
    )
    small = bounded(finding)
    size = len(
        orjson.dumps(
            [
                small.title,
                small.summary,
                small.figures,
                small.worst,
                [vars_of(e) for e in small.examples],
            ]
        )
    )
    assert size < 20_000
    assert small.figures["and more"] == "980" and small.worst["and more"] == "990"


def vars_of(example: Example) -> list[str | None]:
    return [example.message_id, example.recipient, example.detail]


def test_an_attackers_string_in_a_log_line_is_cut_and_escaped() -> None:
    assert loggable("a\nb\x1b[31m" + "z" * 5_000) == "a\\nb\\x1b[31m" + "z" * 56 + "…"
    assert loggable("123456789012") == "123456789012"
    assert loggable(None) is None
