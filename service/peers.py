"""Who is at the other end of a connection: loopback or not, a trusted proxy or not,
and the key a client's requests are counted under. Pure: no I/O."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# One subscriber gets a whole /64 (RFC 6177 recommends /48 to /64 per site), and SLAAC
# lets it pick any address in it: counting per address would give it 2**64 buckets.
IPV6_CLIENT_PREFIX = 64


@lru_cache(maxsize=4096)
def ip_of(host: str | None) -> IPAddress | None:
    """The address ``host`` names (brackets allowed), IPv4-mapped IPv6 unwrapped; None
    for a name or garbage."""
    if not host:
        return None
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(host: str | None) -> bool:
    """A loopback address (127.0.0.0/8, ::1, ::ffff:127.x): the peer is on this machine."""
    address = ip_of(host)
    return address is not None and address.is_loopback


def client_key(host: str) -> str:
    """What a client's requests are counted under: its IPv4 address, its IPv6 /64, or
    the text itself when it is not an address (a unix socket's peer)."""
    address = ip_of(host)
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


class TrustedProxies:
    """The peers whose ``X-Forwarded-*`` headers are believed: ``FORWARDED_ALLOW_IPS``
    read as uvicorn reads it (addresses, CIDR networks, ``*`` for any peer)."""

    def __init__(self, spec: str) -> None:
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        self.any = "*" in entries
        self.networks: list[IPNetwork] = []
        self.literals: set[str] = set()
        for entry in entries:
            if entry == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.literals.add(entry)  # as uvicorn: a unix socket path, say

    def __contains__(self, peer: str | None) -> bool:
        if self.any:
            return True
        if not peer:
            return False
        address = ip_of(peer)
        if address is None:
            return peer in self.literals
        return any(address in network for network in self.networks)
