"""A DNS server on loopback for MX tests: answers from a table, counts questions,
and answers some names late."""

from __future__ import annotations

import asyncio
from collections import Counter

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class MxServer(asyncio.DatagramProtocol):
    """``records`` maps a domain to its MX hosts; any other name is NXDOMAIN, a name
    in ``failing`` answers SERVFAIL, and a name in ``slow`` answers that many seconds
    late (the other names meanwhile on time)."""

    def __init__(
        self,
        records: dict[str, list[str]],
        failing: frozenset[str] = frozenset(),
        slow: dict[str, float] | None = None,
    ):
        self.records = records
        self.failing = failing
        self.slow = slow or {}
        self.questions: Counter[str] = Counter()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".")
        self.questions[name] += 1
        if name in self.failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.MX:
            rdatas = [f"{10 * (n + 1)} {host}." for n, host in enumerate(self.records[name])]
            response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "MX", *rdatas))
        assert self.transport is not None
        delay = self.slow.get(name)
        if delay is None:
            self.transport.sendto(response.to_wire(), addr)
        else:
            asyncio.get_running_loop().call_later(delay, self._send_late, response.to_wire(), addr)

    def _send_late(self, wire: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"


async def start_mx_server(
    records: dict[str, list[str]],
    failing: frozenset[str] = frozenset(),
    slow: dict[str, float] | None = None,
) -> MxServer:
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(
        lambda: MxServer(records, failing, slow), local_addr=("127.0.0.1", 0)
    )
    return server
