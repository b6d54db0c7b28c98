"""The outbound helper's pure parts: the proxy route from HTTPS_PROXY and NO_PROXY,
Retry-After, and the shared backoff."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from service.outbound import ProxyRoute, backoff_s, retry_after_seconds, ssl_context
from tests.support.tls import make_certificates

PROXY = "http://proxy.internal:3128"


@pytest.mark.parametrize(
    ("no_proxy", "host", "proxied"),
    [
        ("", "hooks.slack.com", True),
        ("*", "hooks.slack.com", False),
        ("slack.com", "hooks.slack.com", False),  # a domain covers its subdomains
        (".slack.com", "hooks.slack.com", False),
        ("*.slack.com", "hooks.slack.com", False),
        ("slack.com", "slack.com", False),
        ("slack.com", "notslack.com", True),  # a suffix is not a subdomain
        ("example.com, slack.com", "hooks.slack.com", False),
        ("10.0.0.0/8", "10.1.2.3", False),
        ("10.0.0.0/8", "11.1.2.3", True),
        ("192.0.2.7", "192.0.2.7", False),
        ("fd00::/8", "fd00::1", False),
        ("fd00::/8", "[fd00::1]", False),
        ("10.0.0.0/8", "hooks.slack.com", True),
    ],
)
def test_no_proxy_takes_domains_addresses_and_blocks(
    no_proxy: str, host: str, proxied: bool
) -> None:
    route = ProxyRoute.from_environ({"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy})
    assert route.proxied(host) is proxied


def test_the_proxy_is_read_from_either_spelling_and_absent_means_direct() -> None:
    assert ProxyRoute.from_environ({"https_proxy": PROXY}).proxy == PROXY
    assert ProxyRoute.from_environ({"HTTPS_PROXY": PROXY, "no_proxy": "x.com"}).no_proxy == (
        "x.com",
    )
    assert ProxyRoute.from_environ({}).proxied("hooks.slack.com") is False
    # Plain-http proxies for plain http are not ours to honour: the contract names HTTPS_PROXY.
    assert ProxyRoute.from_environ({"HTTP_PROXY": PROXY}).proxy is None


def test_ssl_cert_file_adds_the_private_ca(tmp_path: Path) -> None:
    ca, _, _ = make_certificates(tmp_path)
    names = {
        dict(item[0] for item in cert["subject"]).get("commonName")
        for cert in ssl_context({"SSL_CERT_FILE": str(ca)}).get_ca_certs()
    }
    assert names == {"ses-tracker test CA"}
    default = ssl_context({})
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    assert len(default.get_ca_certs()) > 50  # certifi's bundle


def test_retry_after_takes_seconds_or_a_date() -> None:
    assert retry_after_seconds("7", 0.0) == 7.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert retry_after_seconds("soon", 0.0) is None
    assert retry_after_seconds(None, 0.0) is None


def test_backoff_is_jittered_capped_and_never_sooner_than_retry_after() -> None:
    waits = [backoff_s(attempt, 1.0, 8.0) for attempt in range(1, 12) for _ in range(20)]
    assert all(0.0 <= w <= 8.0 for w in waits)
    assert max(backoff_s(1, 1.0, 8.0) for _ in range(50)) <= 1.0
    assert backoff_s(1, 1.0, 8.0, retry_after_s=30.0) == 30.0
    assert backoff_s(1, 1.0, 8.0, retry_after_s=86_400.0, retry_after_cap_s=3_600.0) == 3_600.0
