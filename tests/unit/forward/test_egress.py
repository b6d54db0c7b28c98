"""Forwarding posts to public addresses only, unless told otherwise."""

from __future__ import annotations

import pytest

from service.forward.egress import EgressRefused, check_destination, is_public


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("10.0.0.5", False),
        ("172.16.3.4", False),
        ("192.168.1.1", False),
        ("127.0.0.2", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),  # a private IPv4 inside IPv6
        ("224.0.0.1", False),
        ("0.0.0.0", False),
    ],
)
def test_only_global_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


async def test_private_destinations_are_refused_unless_allowed() -> None:
    with pytest.raises(EgressRefused, match=r"169\.254\.169\.254"):
        await check_destination("https://169.254.169.254/latest/meta-data", False)
    with pytest.raises(EgressRefused, match="not a public address"):
        await check_destination("https://10.1.2.3/hook", False)
    await check_destination("https://10.1.2.3/hook", True)
    await check_destination("http://localhost:9000/hook", False)  # loopback by name
    await check_destination("https://93.184.216.34/hook", False)
