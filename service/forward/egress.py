"""Where outbound posts may go: not into the network the service runs in.

A webhook or subscription URL is configuration, but it names a host whose addresses
can change; posting to a private, link-local (cloud metadata: 169.254.169.254),
loopback or otherwise special address would let a URL reach what the service can
reach. Every address a host resolves to is vetted, and one non-public address
refuses the host, unless ``allow_private`` (``SES_TRACKER_FORWARD_ALLOW_PRIVATE``; an
alert sink, which may be an Alertmanager inside the network) or the URL names
loopback itself (``http://localhost``, for development).

An IPv6 address can carry an IPv4 one that a NAT64 gateway, a 6to4 relay or a
dual-stack socket turns back into IPv4 (``64:ff9b::10.0.0.1`` reaches 10.0.0.1):
:func:`embedded_ipv4` unwraps every such form, and the address is public only if
it and everything it carries are.

``service.outbound`` connects to the addresses :func:`vet` returns, so the check and
the connect use one resolution: a name cannot rebind between them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from service.urls import LOOPBACK_HOSTS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


class EgressRefused(Exception):
    """The URL's host resolves to an address posts must not go to."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address ``ip`` carries (none for a plain IPv6 address)."""
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and value > 1):  # :: and ::1 are not IPv4
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip in _NAT64_LOCAL:
        # RFC 6052 places the IPv4 address by prefix length (/48, /56, /64 skip the
        # "u" octet at bits 64-71; /96 ends the address); which one a gateway uses is
        # its configuration, so every placement is judged.
        packed = ip.packed
        return [
            ipaddress.IPv4Address(bytes(packed[6:8] + packed[9:11])),  # /48
            ipaddress.IPv4Address(bytes(packed[7:8] + packed[9:12])),  # /56
            ipaddress.IPv4Address(bytes(packed[9:13])),  # /64
            ipaddress.IPv4Address(bytes(packed[12:16])),  # /96
        ]
    if ip in _SIX_TO_FOUR:
        return [ipaddress.IPv4Address(bytes(ip.packed[2:6]))]
    if ip in _TEREDO:
        server, client = ip.teredo or (None, None)
        return [a for a in (server, client) if a is not None]
    return []


def _unwrapped(address: str) -> list[IPAddress]:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address):
        return [ip, *embedded_ipv4(ip)]
    return [ip]


def is_public(address: str) -> bool:
    """Globally routable, and so is every IPv4 address it carries."""
    return all(ip.is_global and not ip.is_multicast for ip in _unwrapped(address))


def is_loopback(address: str) -> bool:
    """The address, or the IPv4 one it carries (``::ffff:127.0.0.1``), is loopback."""
    return _unwrapped(address)[-1].is_loopback


def vet(host: str, addresses: list[str], allow_private: bool) -> list[str]:
    """The addresses of ``host`` a post may connect to, or EgressRefused: every one
    public (one private address refuses the name: a resolver's order is not ours to
    trust), or loopback for a URL that names loopback, or any with ``allow_private``."""
    if not addresses:
        raise EgressRefused(f"{host} resolves to no address")
    if allow_private:
        return addresses
    host = host.lower().strip("[]")
    for address in addresses:
        if host in LOOPBACK_HOSTS and is_loopback(address):
            continue
        if not is_public(address):
            raise EgressRefused(
                f"{host} resolves to {address}, which is not a public address "
                "(SES_TRACKER_FORWARD_ALLOW_PRIVATE=true allows it)"
            )
    return addresses


async def check_destination(url: str, allow_private: bool, *, must_resolve: bool = True) -> None:
    """Vet ``url``'s host before a post whose connection is not ours (a proxy's, or
    a caller's own client). ``must_resolve=False``: a name this machine cannot
    resolve is left to the proxy, which resolves it."""
    host = (urlsplit(url).hostname or "").lower()
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if not must_resolve:
            return
        raise EgressRefused(f"cannot resolve {host}: {exc.strerror}") from exc
    vet(host, list(dict.fromkeys(str(info[4][0]) for info in infos)), allow_private)
