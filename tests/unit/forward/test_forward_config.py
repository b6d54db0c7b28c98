"""Subscriptions files: checked like the rules, every problem with file, line, field."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from service.forward.config import ForwardConfigError, describe, parse_subscriptions
from tests.support.process import command

GOOD = """\
subscriptions:
  - name: crm
    url: https://crm.example.com/hooks/ses?token=abc
    secret: a-long-random-secret-value
    statuses: [bounced, complained]
    configuration_sets: [marketing]
    tags: {campaign: spring-sale}
    providers: [microsoft]
  - {name: local, url: "http://127.0.0.1:9000/h", secret: another-long-secret-val}
"""


def test_a_good_file_loads_and_prints_without_url_or_secret() -> None:
    crm, local = parse_subscriptions(GOOD, "f.yaml")
    assert crm.statuses == ("bounced", "complained") and crm.tags == {"campaign": "spring-sale"}
    assert local.batch_size == 100 and not local.statuses
    shown = describe([crm, local])
    assert shown[0]["host"] == "crm.example.com" and "url" not in shown[0]
    assert "secret" not in shown[0] and "token=abc" not in str(shown)
    assert "token" not in repr(crm) and "a-long-random" not in repr(crm)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "subscriptions:\n  - {name: a, url: 'http://x.example/h', secret: aaaaaaaaaaaaaaaa}\n",
            "f.yaml:2: subscriptions[0].url: URL must be https (http only to localhost)",
        ),
        (
            "subscriptions:\n  - name: a\n    url: https://x.example/h\n    secret: short\n",
            "f.yaml:4: subscriptions[0].secret: String should have at least 16 characters",
        ),
        (
            "subscriptions:\n  - name: a\n    url: https://x.example/h\n"
            "    secret: aaaaaaaaaaaaaaaa\n    statuses: [lost]\n",
            "f.yaml:5: subscriptions[0].statuses[0]: Input should be 'sent', 'delayed', "
            "'delivered', 'bounced', 'complained', 'rejected' or 'rendering_failed'",
        ),
        (
            "subscriptions:\n  - {name: a, url: 'https://x.example', secret: aaaaaaaaaaaaaaaa,"
            " providers: [aol]}\n",
            "f.yaml:2: subscriptions[0].providers[0]: Input should be 'gmail', 'microsoft',"
            " 'yahoo', 'apple', 'proton', 'gmx', 'yandex', 'zoho' or 'other'",
        ),
        (
            "subscriptions:\n  - {name: a, url: 'https://u:p@x.example',"
            " secret: aaaaaaaaaaaaaaaa}\n",
            "f.yaml:2: subscriptions[0].url: URL must not carry a user or password",
        ),
        ("subscriptions: [\n", "f.yaml:2: not valid YAML"),
        ("- 1\n", "f.yaml: expected a mapping with a 'subscriptions' list"),
    ],
)
def test_errors_name_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ForwardConfigError) as caught:
        parse_subscriptions(text, "f.yaml")
    assert str(caught.value).startswith(expected), str(caught.value)


def test_names_are_unique_and_every_problem_is_said_at_once() -> None:
    text = (
        "subscriptions:\n"
        "  - {name: a, url: 'https://x.example', secret: aaaaaaaaaaaaaaaa}\n"
        "  - {name: a, url: 'https://y.example', secret: aaaaaaaaaaaaaaaa}\n"
    )
    with pytest.raises(ForwardConfigError, match="names must be unique: a"):
        parse_subscriptions(text, "f.yaml")
    two = "subscriptions:\n  - {name: A, url: 'ftp://x', secret: s, extra: 1}\n"
    with pytest.raises(ForwardConfigError) as caught:
        parse_subscriptions(two, "f.yaml")
    assert len(str(caught.value).splitlines()) == 4  # name, url, secret, extra


def test_check_forward_command(tmp_path: Path) -> None:
    good = tmp_path / "forward.yaml"
    good.write_text(GOOD)
    result = subprocess.run(
        [*command(), "check-forward", str(good)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert '"host": "crm.example.com"' in result.stdout and "abc" not in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("https://crm", "http://crm"))
    result = subprocess.run(
        [*command(), "check-forward", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and f"{bad}:3: subscriptions[0].url" in result.stderr
