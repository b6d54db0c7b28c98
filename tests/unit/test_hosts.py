"""The Host, Origin and content-type rules (api.hosts), as pure functions."""

from __future__ import annotations

import pytest

from api.hosts import HostPolicy, content_problem, exposure_problem, host_name
from service.settings import Settings


def policy(**settings: str) -> HostPolicy:
    return HostPolicy.of(Settings(_env_file=None, **settings))


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8000", "localhost"),
        ("localhost.:8000", "localhost"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::]", "::"),
        ("tracker.example.com", "tracker.example.com"),
        ("::1", None),  # an IPv6 literal must be bracketed
        ("evil.example:80x", None),
        ("a@b", None),
        ("", None),
        ("[::1", None),
    ],
)
def test_a_host_value_reads_as_its_name_without_port(value: str, name: str | None) -> None:
    assert host_name(value) == name


@pytest.mark.parametrize(
    ("host", "peer_loopback", "allowed"),
    [
        ("localhost:8000", False, True),
        ("127.0.0.1:8000", False, True),
        ("[::1]:8000", False, True),
        ("0.0.0.0:8000", True, True),  # a browser on this machine opening 0.0.0.0
        ("0.0.0.0:8000", False, False),  # from elsewhere it is a name someone chose
        ("[::]:8000", True, True),
        ("[::]:8000", False, False),
        ("tracker.example.com", False, True),  # the public URL's host
        ("TRACKER.example.com:443", False, True),
        ("ses-tracker.internal:8000", False, True),  # in ALLOWED_HOSTS
        ("evil.example", False, False),
        ("evil.example", True, False),  # a rebinding page on this machine's browser
        ("127.0.0.1.evil.example", False, False),
        ("", False, False),
        (None, False, False),
    ],
)
def test_hosts_answered_are_loopback_names_the_public_url_and_the_allowed_ones(
    host: str | None, peer_loopback: bool, allowed: bool
) -> None:
    rules = policy(public_url="https://tracker.example.com", allowed_hosts="ses-tracker.internal")
    assert rules.host_allowed(host, peer_loopback) is allowed


def test_a_star_in_allowed_hosts_answers_any_host_but_trusts_no_origin() -> None:
    rules = policy(allowed_hosts="*")
    assert rules.host_allowed("anything.example", False)
    assert not rules.origin_allowed("https://anything.example", False)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://tracker.example.com", True),  # the public URL's origin
        ("https://TRACKER.example.com/", True),
        ("http://tracker.example.com", False),  # another scheme is another origin
        ("https://tracker.example.com:8443", False),
        ("https://dash.example.com", True),  # ALLOWED_ORIGINS
        ("http://ses-tracker.internal:8000", True),  # an allowed host's page
        ("http://127.0.0.1:8000", True),  # the page served on loopback (demo)
        ("http://localhost:3000", True),
        ("http://0.0.0.0:8000", False),  # only for a client on this machine
        ("https://evil.example", False),
        ("null", False),
        ("file://", False),
    ],
)
def test_origins_that_may_change_state_never_follow_the_requests_own_host(
    origin: str, allowed: bool
) -> None:
    rules = policy(
        public_url="https://tracker.example.com/",
        allowed_hosts="ses-tracker.internal",
        allowed_origins="https://dash.example.com",
    )
    assert rules.origin_allowed(origin, peer_loopback=False) is allowed


@pytest.mark.parametrize(
    ("path", "content_type", "encoding", "refused"),
    [
        ("/v1/events", "", "", False),  # none is JSON
        ("/v1/events", "application/json", "", False),
        ("/v1/events", "application/json; charset=utf-8", "gzip", False),
        ("/v1/events", "application/x-ndjson", "gzip", False),
        ("/v1/events", "text/plain", "", True),  # what a cross-site form or fetch sends
        ("/v1/events", "application/x-www-form-urlencoded", "", True),
        ("/v1/events", "multipart/form-data; boundary=x", "", True),
        ("/v1/events", "application/json", "br", True),
        ("/v1/ingest/sns", "text/plain; charset=UTF-8", "", False),  # what SNS posts
        ("/v1/ingest/sns", "application/json", "", False),
        ("/v1/ingest/sns", "text/html", "", True),
        ("/v1/ingest/firehose", "application/json", "gzip", False),  # what Firehose posts
        ("/v1/ingest/firehose", "text/plain", "", True),
        ("/v1/session", "text/plain", "", True),
    ],
)
def test_post_bodies_are_json_ndjson_or_what_their_own_sender_sends(
    path: str, content_type: str, encoding: str, refused: bool
) -> None:
    assert (content_problem(path, content_type, encoding) is not None) is refused


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"host": "127.0.0.1"}, False),
        ({"host": "localhost"}, False),
        ({"host": "::1"}, False),
        ({"host": "0.0.0.0"}, True),
        ({"host": "10.1.2.3"}, True),
        ({"host": "0.0.0.0", "public_url": "https://tracker.example.com"}, False),
        ({"host": "0.0.0.0", "allowed_hosts": "tracker.internal"}, False),
    ],
)
def test_listening_beyond_loopback_needs_the_names_it_answers_to(
    settings: dict[str, str], refused: bool
) -> None:
    problem = exposure_problem(Settings(_env_file=None, **settings))
    assert (problem is not None) is refused
    if problem:
        assert "SES_TRACKER_PUBLIC_URL" in problem and "SES_TRACKER_ALLOWED_HOSTS" in problem
