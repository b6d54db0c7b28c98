"""How ``merge.lua`` stores one message's record in Redis."""

from __future__ import annotations

import msgpack

from service.state import MessageRecord
from service.stores.redis import layout


def record_from_bytes(raw: bytes) -> tuple[str, MessageRecord]:
    """Decode what ``merge.lua`` stored (msgpack, laid out as ``layout.RECORD``; an
    empty Lua table packs as [])."""
    fields = dict(zip(layout.RECORD, msgpack.unpackb(raw, raw=True), strict=True))
    return fields["message_id"].decode(), MessageRecord(
        header=fields["header"],
        message_flags=fields["flags"],
        recipients={a.decode(): flags for a, flags in (fields["recipients"] or {}).items()},
        blobs={name.decode(): blob for name, blob in (fields["blobs"] or {}).items()},
        truncated=fields["truncated"],
    )


def record_to_bytes(message_id: str, record: MessageRecord) -> bytes:
    """What ``merge.lua`` would store for ``record`` (erasure rewrites one)."""
    fields = {
        "header": record.header,
        "flags": record.message_flags,
        "truncated": record.truncated,
        "recipients": record.recipients,
        "blobs": record.blobs,
        "message_id": message_id,
    }
    return msgpack.packb([fields[name] for name in layout.RECORD], use_bin_type=False)
