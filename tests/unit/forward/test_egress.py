"""Forwarding posts to public addresses only, unless told otherwise."""

from __future__ import annotations

import ipaddress

import pytest

from service.forward.egress import EgressRefused, check_destination, embedded_ipv4, is_public, vet


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


# Each form an IPv6 address can carry an IPv4 one in: a private, loopback,
# link-local or metadata address inside is refused, a public one is not.
@pytest.mark.parametrize(
    ("address", "public"),
    [
        # NAT64, the well-known prefix (RFC 6052): the gateway posts to the last 32 bits.
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b::127.0.0.1", False),
        ("64:ff9b::169.254.169.254", False),
        ("64:ff9b::8.8.8.8", True),
        # NAT64, the local-use prefix (RFC 8215), with the address at /48 and /96.
        ("64:ff9b:1:a00:0:100::", False),
        ("64:ff9b:1::10.0.0.1", False),
        ("64:ff9b:1::a9fe:a9fe", False),
        # 6to4 (2002::/16): the relay posts to bits 16-47.
        ("2002:a00:1::1", False),
        ("2002:7f00:1::", False),
        ("2002:a9fe:a9fe::1", False),
        ("2002:808:808::1", True),
        # IPv4-compatible (deprecated ::a.b.c.d) and IPv4-mapped.
        ("::127.0.0.1", False),
        ("::10.0.0.1", False),
        ("::169.254.169.254", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:8.8.8.8", True),
        # Teredo (2001::/32): server 65.54.227.120, client 192.0.2.45 obfuscated.
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
        # Plain IPv6 specials.
        ("::", False),
        ("fe80::1%eth0", False),
        ("fd00:ec2::254", False),  # the EC2 metadata service over IPv6
        ("ff02::1", False),
        ("2606:4700:4700::1111", True),
    ],
)
def test_ipv4_inside_ipv6_is_unwrapped_before_it_is_judged(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_the_embedded_address_is_read_from_each_form() -> None:
    six = ipaddress.IPv6Address
    four = ipaddress.IPv4Address
    assert embedded_ipv4(six("64:ff9b::a00:1")) == [four("10.0.0.1")]
    assert embedded_ipv4(six("2002:a00:1::1")) == [four("10.0.0.1")]
    assert embedded_ipv4(six("::a00:1")) == [four("10.0.0.1")]
    assert embedded_ipv4(six("::ffff:a00:1")) == [four("10.0.0.1")]
    assert four("10.0.0.1") in embedded_ipv4(six("64:ff9b:1:a00:0:100::"))  # /48 placement
    assert embedded_ipv4(six("2001:0:4136:e378:8000:63bf:3fff:fdd2")) == [
        four("65.54.227.120"),
        four("192.0.2.45"),
    ]
    assert embedded_ipv4(six("::1")) == [] and embedded_ipv4(six("2606:4700::1")) == []


def test_one_private_address_refuses_the_name_and_loopback_names_keep_loopback() -> None:
    assert vet("hooks.example.com", ["93.184.216.34"], False) == ["93.184.216.34"]
    with pytest.raises(EgressRefused, match=r"10\.0\.0\.1"):
        vet("hooks.example.com", ["93.184.216.34", "10.0.0.1"], False)
    with pytest.raises(EgressRefused, match="not a public address"):
        vet("hooks.example.com", ["64:ff9b::a00:1"], False)
    assert vet("hooks.example.com", ["10.0.0.1"], True) == ["10.0.0.1"]
    assert vet("localhost", ["::1", "127.0.0.1"], False) == ["::1", "127.0.0.1"]
    with pytest.raises(EgressRefused):
        vet("localhost", ["10.0.0.1"], False)  # a "localhost" that is not loopback
    with pytest.raises(EgressRefused):
        vet("hooks.example.com", [], True)


async def test_private_destinations_are_refused_unless_allowed() -> None:
    with pytest.raises(EgressRefused, match=r"169\.254\.169\.254"):
        await check_destination("https://169.254.169.254/latest/meta-data", False)
    with pytest.raises(EgressRefused, match="not a public address"):
        await check_destination("https://10.1.2.3/hook", False)
    await check_destination("https://10.1.2.3/hook", True)
    await check_destination("http://localhost:9000/hook", False)  # loopback by name
    await check_destination("https://93.184.216.34/hook", False)
