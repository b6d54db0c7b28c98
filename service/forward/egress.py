"""Where forwarding may post: not into the network it runs in.

A subscription URL is configuration, but it names a host whose addresses can
change; posting to a private, link-local (cloud metadata: 169.254.169.254),
loopback or otherwise special address would let a URL reach what the service can
reach. Each post resolves the host first and refuses such addresses, unless
``SES_TRACKER_FORWARD_ALLOW_PRIVATE`` allows them (a receiver inside the same
network) or the URL names loopback itself (``http://localhost``, for development).
The connection then resolves the name again, so a name rebinding between the two
look-ups is not caught here; egress rules at the network edge are the backstop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from service.urls import LOOPBACK_HOSTS


class EgressRefused(Exception):
    """The URL's host resolves to an address forwarding must not post to."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_destination(url: str, allow_private: bool) -> None:
    host = (urlsplit(url).hostname or "").lower()
    if allow_private or host in LOOPBACK_HOSTS:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EgressRefused(f"cannot resolve {host}: {exc.strerror}") from exc
    for info in infos:
        address = str(info[4][0])
        if not is_public(address):
            raise EgressRefused(
                f"{host} resolves to {address}, which is not a public address "
                "(SES_TRACKER_FORWARD_ALLOW_PRIVATE=true allows it)"
            )
