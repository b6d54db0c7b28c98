"""A local HTTP server standing in for chat services: scripted answers, recorded requests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

import orjson


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    def json(self):
        return orjson.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # wait this long before answering (a hung service)
    close: bool = False  # drop the connection instead of answering


class LoopbackServer:
    """An asyncio server on a free loopback port for the life of an ``async with``;
    subclasses answer connections in ``_serve``. On leaving, connections still open
    are closed too (``close_clients``, 3.12+), so a handler that never ends (a
    hostile receiver) does not hold the test."""

    _server: asyncio.Server | None = None
    port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if hasattr(self._server, "close_clients"):
            self._server.close_clients()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Receiver(LoopbackServer):
    """Answers each request with the next scripted Answer (then 200s), after ``check``.

    ``check(request)`` may raise AssertionError: the answer is then 400 with the
    reason, as a chat service refuses a payload it cannot read.
    """

    def __init__(self, check: Callable[[Received], None] | None = None) -> None:
        self.script: list[Answer] = []
        self.received: list[Received] = []
        self.refusals: list[str] = []
        self._check = check

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(path, headers, body, time.monotonic())
                self.received.append(request)
                answer = self.script.pop(0) if self.script else Answer()
                if answer.hang_s:
                    await asyncio.sleep(answer.hang_s)
                if answer.close:
                    return
                status, text = answer.status, b"ok"
                if status < 300 and self._check is not None:
                    try:
                        self._check(request)
                    except AssertionError as exc:
                        self.refusals.append(str(exc))
                        status, text = 400, str(exc).encode()
                extra = "".join(f"{k}: {v}\r\n" for k, v in answer.headers.items())
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-length: {len(text)}\r\n{extra}\r\n".encode()
                    + text
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the receiver is closing
        finally:
            writer.close()
