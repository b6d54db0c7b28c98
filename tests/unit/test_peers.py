"""Peers and client keys (service.peers): loopback, trusted proxies, IPv6 by /64."""

from __future__ import annotations

import pytest

from service.peers import TrustedProxies, client_key, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("127.evil.example", False),  # a name, however it starts
        ("localhost", False),  # a peer is an address; a name proves nothing
        ("", False),
        (None, False),
    ],
)
def test_only_a_loopback_address_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("unix-socket", "unix-socket"),
    ],
)
def test_clients_are_keyed_by_ipv4_address_or_ipv6_slash_64(host: str, key: str) -> None:
    assert client_key(host) == key


def test_trusted_proxies_read_addresses_networks_and_star_as_uvicorn_does() -> None:
    proxies = TrustedProxies("10.0.0.0/16, 192.0.2.1, fd00::/8, /run/proxy.sock")
    assert "10.0.255.1" in proxies and "192.0.2.1" in proxies and "fd00::5" in proxies
    assert "/run/proxy.sock" in proxies
    assert "10.1.0.1" not in proxies and "127.0.0.1" not in proxies and None not in proxies
    assert "203.0.113.1" in TrustedProxies("*")
