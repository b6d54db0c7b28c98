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


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPException(400, f"invalid gzip body: {exc}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise HTTPException(413, f"decompressed body over the {limit}-byte limit")
    return data
