"""Request bodies read with a size limit, gzip included, and paid for in rate-limit
tokens by their inflated size."""

from __future__ import annotations

import math
import time
import zlib

from fastapi import HTTPException, Request

from service.ratelimit import body_cost

# Legitimate SES batches inflate at most ~130x (5,000 deliveries differing only in
# their message ids: 127x; the same record over and over: 188x); the parser's worst
# shapes inflate 290x to 1,000x (deflate's ceiling is ~1,032x). A body inflating
# past this ratio is refused: it is built to cost work, not to carry events.
MAX_INFLATION_RATIO = 250
# Below this much inflated output any ratio is allowed: the work it can cost is
# small (the worst shape parses at ~0.4 s per MiB), and tiny bodies compress oddly.
RATIO_FREE_BYTES = 256 * 1024


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it (or its decompressed form) passes ``limit``.

    Once read, the client pays one rate-limit token per 256 KiB of it (inflated),
    beyond the request's own: 429 with Retry-After when it cannot.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "invalid Content-Length")
        if int(declared) > limit:
            raise HTTPException(413, f"body is {declared} bytes, over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body over the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").strip().lower() == "gzip":
        body = _gunzip(body, limit)
    _charge(request, len(body))
    return body


def _charge(request: Request, size: int) -> None:
    """Charge the body's tokens to the client ``api.deps.rate_limited`` charged."""
    client = getattr(request.state, "rate_limit_client", None)
    if client is None:  # limits off, or a loopback client
        return
    limiter = request.app.state.runtime.rate_limiter
    # At most what a full bucket holds beside the request's own token, so any body
    # within the size limit can pass, at worst once per refill of the bucket.
    cost = min(body_cost(size), limiter.burst - 1)
    if cost <= 0:
        return
    wait_s = limiter.take(client, time.monotonic(), cost)
    if wait_s > 0:
        raise HTTPException(
            429,
            f"too many requests from this client (a {size}-byte body costs {cost + 1} tokens)",
            {"Retry-After": str(math.ceil(wait_s))},
        )


# Fed to zlib a slice at a time: at a member's end zlib copies the input it did not
# use, so feeding the whole body would copy the rest of it once per member.
_GZIP_SLICE = 64 * 1024
MAX_GZIP_MEMBERS = 1_000


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several back to back), whole.

    A stream cut short or corrupt is a 400, never a silent prefix: accepting part of
    a body would acknowledge records that were never read. One that inflates past
    MAX_INFLATION_RATIO is a 413, refused as soon as its output shows it.
    """
    view = memoryview(body)
    parts: list[bytes] = []
    size = offset = members = 0
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    while True:
        piece = view[offset : offset + _GZIP_SLICE]
        offset += len(piece)
        try:
            data = decompressor.decompress(piece, limit + 1 - size)
        except zlib.error as exc:
            raise HTTPException(400, f"invalid gzip body: {exc}") from None
        size += len(data)
        parts.append(data)
        if size > limit or decompressor.unconsumed_tail:
            raise HTTPException(413, f"decompressed body over the {limit}-byte limit")
        # Every byte fed so far was consumed (no unconsumed tail), so ``offset`` is
        # the compressed size behind ``size``.
        if size > RATIO_FREE_BYTES and size > MAX_INFLATION_RATIO * offset:
            raise HTTPException(
                413,
                f"gzip body refused: it inflates over {MAX_INFLATION_RATIO}x its size "
                "(SES batches stay under ~130x)",
            )
        if not decompressor.eof:
            if offset >= len(body):
                raise HTTPException(400, "invalid gzip body: truncated stream")
            continue
        members += 1
        offset -= len(decompressor.unused_data)
        # Some writers pad the end with zero bytes; anything else is another member.
        if offset >= len(body) or (
            body[offset] == 0 and body.count(0, offset) == len(body) - offset
        ):
            return b"".join(parts)
        if members >= MAX_GZIP_MEMBERS:
            raise HTTPException(400, f"gzip body of over {MAX_GZIP_MEMBERS} members")
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
