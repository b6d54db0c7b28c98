"""Request bodies read with a size limit, gzip included."""

from __future__ import annotations

import zlib

from fastapi import HTTPException, Request


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it (or its decompressed form) passes ``limit``."""
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
    return body


# Fed to zlib a slice at a time: at a member's end zlib copies the input it did not
# use, so feeding the whole body would copy the rest of it once per member.
_GZIP_SLICE = 64 * 1024
MAX_GZIP_MEMBERS = 1_000


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several back to back), whole.

    A stream cut short or corrupt is a 400, never a silent prefix: accepting part of
    a body would acknowledge records that were never read.
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
