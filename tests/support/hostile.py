"""Receivers that answer a post in the ways that cost a sender: a reply of a
gibibyte (generated as it is sent, never held), and one whose headers drip a byte
at a time and never end."""

from __future__ import annotations

import asyncio

from tests.support.receiver import LoopbackServer

GIB = 1 << 30
_CHUNK = b"x" * (64 * 1024)


class HostileReceiver(LoopbackServer):
    """``mode``: ``"flood"`` answers 200 with a 1 GiB body; ``"drip"`` sends a status
    line, then header bytes every ``drip_s`` seconds, for ever. Counts what it sent
    and how many posts were open at once."""

    def __init__(self, mode: str, drip_s: float = 0.05) -> None:
        assert mode in ("flood", "drip")
        self.mode = mode
        self.drip_s = drip_s
        self.requests = 0
        self.sent_bytes = 0
        self.open_now = 0
        self.most_open = 0
        self.closed = 0  # connections the sender closed on us

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests += 1
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
            try:
                if self.mode == "flood":
                    await self._flood(writer)
                else:
                    await self._drip(reader, writer)
            finally:
                self.open_now -= 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.closed += 1
        finally:
            writer.close()

    async def _flood(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % GIB)
        left = GIB
        while left > 0:
            chunk = _CHUNK[: min(left, len(_CHUNK))]
            writer.write(chunk)
            await writer.drain()  # raises once the sender has closed the connection
            self.sent_bytes += len(chunk)
            left -= len(chunk)

    async def _drip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nx-drip: ")
        # Noticed as soon as the sender hangs up, not at the next drip: a sender that
        # retries at once must not look like a second post open beside the first.
        hung_up = asyncio.ensure_future(reader.read())
        try:
            while True:
                done, _ = await asyncio.wait({hung_up}, timeout=self.drip_s)
                if done:
                    raise ConnectionResetError
                writer.write(b"a")
                await writer.drain()
                self.sent_bytes += 1
        finally:
            hung_up.cancel()
