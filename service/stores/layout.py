"""What Python and ``merge.lua`` exchange, position by position: one definition.

The script reads msgpack arrays by index; a position written in two places would
drift. So every array that crosses the boundary is named here, in order, and the
script is loaded with a prelude generated from these names (:func:`lua_prelude`):
``merge.lua`` writes ``event[EVENT_AT]``, never ``event[9]``, and the status codes
it tests come from ``service.state``. Message and event writes go over as the
``MessageWrite``/``EventWrite`` tuples themselves (msgpack packs a tuple as an
array), so their field order *is* the wire order and nothing is repacked per event.
"""

from __future__ import annotations

import re

from service import codec, search, state, stats
from service.stores import keys

# A batch entry: one per message key, in KEYS order.
ENTRY = ("write", "handle")
MESSAGE = state.MessageWrite._fields
EVENT = state.EventWrite._fields
# One of an event's recipient_bits.
BITS = ("address", "bits")
# A stored record (Redis string, msgpack); read back by redis_record.
RECORD = ("header", "flags", "truncated", "recipients", "blobs", "message_id")
# ARGV.
ARG = (
    "ttl_s",
    "status_table",
    "max_fields",
    "batch",
    "checkpoint",
    "stats",
    "feed",
    "index",
    "max_recipients",
    "max_blob_bytes",
    "hold_s",
    "forward",
    "suppress",
    "trim",
    "declared",
)
# ARGV[stats], when statistics are counted.
STATS = (
    "bucket_ttl_s",
    "status_names",
    "live_cap",
    "bucket_prefix",
    "now_bucket",  # NOT_LIVE: nothing counted live (replays)
    "rollup_prefix",
    "hour_from_ms",  # -1: no hourly rollups
    "hour_keep_s",
    "day_from_ms",  # -1: no daily rollups
    "day_keep_s",
    "history_cap",
    "now_s",
    "groups_prefix",  # a live bucket's groups: <groups_prefix><bucket>:<dimension>
    "admission_prefix",  # an hour's live admission: <admission_prefix><hour>
    "rollup_index_prefix",  # the rollups written: <rollup_index_prefix><step>, a zset
    "overall_prefix",  # a rollup's overall figures alone: <overall_prefix><step>:<start>
)
# ARGV[index]: the search indexes' settings.
INDEX = ("prefix", "bucket_ms", "status_names", "oldest_live_ms")
# ARGV[feed], when transitions are appended to the stream.
FEED = ("min_id_ms",)
# One transition in the stream entry.
FED = ("message_id", "address", "from_status", "to_status", "at", "latency_ms")
# ARGV[suppress], when suppressions are kept (service.suppressions).
SUPPRESS = ("keep_s", "now_ms")
# A suppression, as stored (<prefix>sup:<address>).
SUPPRESSION = ("reason", "since_ms", "message_id", "subtype")
# A stored event blob (service.codec), read for a bounce's subtype.
STORED = ("type", "at", "recipients", "details", "processing_ms", "seen_ms")
# ARGV[forward], when transitions are appended to the forwarding outbox.
FORWARD = ("min_id_ms",)
# One change in an outbox entry (service.forward.items.Change).
FORWARDED = (
    "message_id",
    "address",
    "from_status",
    "to_status",
    "at",
    "latency_ms",
    "header",
    "event",
    "provider",
)
# The reply: transitions flattened, this many values each.
REPLY = ("message_index", "event_index", "address", "from_status", "to_status")

# Codes the script tests, named.
CODES = {
    "STATUS_SENT": state.SENT,
    "STATUS_DELAYED": state.DELAYED,  # this or below: still waiting (search.is_pending)
    "PROBLEM_FIRST": state.STATUSES.index(search.PROBLEM_STATUSES[0]),
    "NEW_RECIPIENT": -1,  # from_status of a recipient first seen
    "DESTINATION_EVENT": 0,  # event_index of a change no single event made
    "NOT_LIVE": stats.NOT_LIVE,  # EventWrite.bucket of an event no live window reads
    "NO_LATENCY": -1,  # FED latency_ms without a known send time
    "NO_STEP": -1,  # EventWrite.natural of an event that brings no status
    "COMPLAINT_BIT": state.COMPLAINT,  # gained by a complaint (else a Permanent bounce)
    "UNSAFE_BITS": state.UNSAFE,  # outcome flags that make an address a suppression
}
# Key families whose names the script builds (service.stores.keys, the one definition).
LUA_KEY_FAMILIES = (
    "record",
    "recipient",
    "status",
    "pending",
    "buckets",
    "send_time_bucket",
    "suppression",
    "suppressions",
    "suppressions_by_reason",
)
# Strings the script tests or builds names from, named.
STRINGS = {
    "DETAIL_BOUNCE_SUBTYPE": codec.short_key("bounce_subtype"),
    **{f"KEY_{family.upper()}": keys.stem(family) for family in LUA_KEY_FAMILIES},
}

_ARRAYS = {
    "ENTRY": ENTRY,
    "MESSAGE": MESSAGE,
    "EVENT": EVENT,
    "BITS": BITS,
    "RECORD": RECORD,
    "ARG": ARG,
    "STATS": STATS,
    "INDEX": INDEX,
    "FEED": FEED,
    "FED": FED,
    "FORWARD": FORWARD,
    "FORWARDED": FORWARDED,
    "SUPPRESS": SUPPRESS,
    "SUPPRESSION": SUPPRESSION,
    "STORED": STORED,
    "REPLY": REPLY,
}


def position(array: tuple[str, ...], name: str) -> int:
    """0-based position of ``name`` in ``array`` (Lua's is one more)."""
    return array.index(name)


def lua_prelude(script: str | None = None) -> str:
    """``local EVENT_AT = 5`` ... for every name above: what merge.lua indexes with.

    With ``script``, only the names it mentions: Lua allows a function (the script's
    main chunk included) 200 local variables, and unused constants would spend them.
    """
    lines = ["-- Generated by service.stores.layout: positions and codes, named."]
    constants: list[tuple[str, object]] = []
    for prefix, names in _ARRAYS.items():
        for index, name in enumerate(names, 1):
            constants.append((f"{prefix}_{name.upper()}", index))
    constants += list(CODES.items())
    constants += [(name, f"'{text}'") for name, text in STRINGS.items()]
    constants.append(("REPLY_STRIDE", len(REPLY)))
    for name, value in constants:
        if script is None or re.search(rf"\b{name}\b", script):
            lines.append(f"local {name} = {value}")
    return "\n".join(lines) + "\n"
