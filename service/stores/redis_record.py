"""How ``merge.lua`` stores one message's record in Redis."""

from __future__ import annotations

import msgpack

from service.state import MessageRecord


def record_from_bytes(raw: bytes) -> tuple[str, MessageRecord]:
    """Decode what ``merge.lua`` stored (msgpack; an empty Lua table packs as [])."""
    header, message_flags, truncated, recipients, blobs, message_id = msgpack.unpackb(raw, raw=True)
    return message_id.decode(), MessageRecord(
        header=header,
        message_flags=message_flags,
        recipients={address.decode(): flags for address, flags in (recipients or {}).items()},
        blobs={name.decode(): blob for name, blob in (blobs or {}).items()},
        truncated=truncated,
    )
