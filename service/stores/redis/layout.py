"""What Python and ``merge.lua`` exchange, position by position: one definition.

The script reads msgpack arrays by index; a position written in two places would
drift. So every array that crosses the boundary is named here, in order, and the
script is loaded with a prelude generated from these names (:func:`lua_prelude`):
``merge.lua`` writes ``event[EVENT_AT]``, never ``event[9]``, and the status codes
it tests come from ``service.state``. Message and event writes go over in the
``MessageWrite``/``EventWrite`` field order (msgpack packs a tuple as an array):
a message's own tuple with its events cut before their statistics fields
(``slim``), which the script has no use for.
"""

from __future__ import annotations

import re
from typing import Any

from service import codec, dimensions, providers, search, state, stats, suppressions
from service.stores.redis import keys

# KEYS: one record key per batch entry, then these, each only when its ARGV part is
# sent (named by the same word), in this order; then, on a cluster, the declared
# keys. The script finds each by name (its OPTIONAL_KEY_* constants), never by
# counting.
OPTIONAL_KEYS = ("checkpoint", "log", "feed", "forward", "erasures", "watched")
# A batch entry: one per message key, in KEYS order.
ENTRY = ("write", "handle")
MESSAGE = state.MessageWrite._fields
# An event's fields up to its statistics, which stay in Python: the change log's
# context carries them to the projection (service.stores.redis.changelog).
EVENT = state.EventWrite._fields[: state.EventWrite._fields.index("natural")]
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
    "log",
    "feed",
    "index",
    "max_recipients",
    "max_blob_bytes",
    "hold_s",
    "forward",
    "suppress",
    "trim",
    "declared",
    "log_context",
    "erasures",
    "watched",
)
# ARGV[log], when the call appends to the change log (service.stores.redis.changelog).
LOG = ("min_id_ms",)
# One event new to the store, in a change log entry's "a" field (flattened).
APPLIED = ("message_index", "event_index")
# project.lua's plan (service.stores.redis.projection): the statistics a run of change
# log entries counted, per target; "*_key" values are positions in KEYS.
PLAN = ("admissions", "live", "rollups", "now_bucket", "bucket_ttl_s")
# Where groups are admitted (an hour's live buckets share one; a rollup is its
# own), and the groups its targets count, in the order they were first counted.
ADMISSION = ("key", "ttl_s", "cap", "order")
LIVE = (
    "bucket",
    "key",
    "ttl_s",
    "admission_key",
    "overall",
    "groups",  # [[group, {tail: n}]...], in first-counted order
    "dimension_keys",  # {dimension: key}
)
# One of a target's groups: the group, and {tail: n} counted under it.
COUNTED_GROUP = ("group", "tails")
ROLLUP = (
    "key",
    "ttl_s",
    "overall",
    "groups",
    "overall_key",
    "index_key",
    "start",
    "expired_before",
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
    "NO_RECORD": -1,  # the index status of a message not stored yet (below any status)
    "DESTINATION_EVENT": 0,  # event_index of a change no single event made
    "NO_LATENCY": -1,  # FED latency_ms without a known send time
    "COMPLAINT_BIT": state.COMPLAINT,  # gained by a complaint (else a Permanent bounce)
    "UNSAFE_BITS": state.UNSAFE,  # outcome flags that make an address a suppression
}
# Key families whose names the script builds (service.stores.redis.keys, the one definition).
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
# The fields of the stream entries the script appends: the change log's context,
# transitions and applied events (service.stores.redis.changelog); the transitions stream
# and the forwarding outbox hold their transitions under FIELD_TRANSITIONS too.
FIELD_CONTEXT, FIELD_TRANSITIONS, FIELD_APPLIED = "c", "t", "a"
# The script's whole answer when the tombstones changed since the caller read them
# (service.stores.redis strips the writes again).
STALE_ERASURES = "stale-erasures"
# The tombstones' revision of a group where none was ever recorded.
NO_ERASURES = "0"
assert suppressions.REASONS == ("bounce", "complaint")
# Strings the script tests or builds names from, named.
STRINGS = {
    "FIELD_CONTEXT": FIELD_CONTEXT,
    "FIELD_TRANSITIONS": FIELD_TRANSITIONS,
    "FIELD_APPLIED": FIELD_APPLIED,
    "STALE_ERASURES": STALE_ERASURES,
    "NO_ERASURES": NO_ERASURES,
    "OTHER_PROVIDER": providers.OTHER,  # a forwarded change's provider without one
    "REASON_BOUNCE": suppressions.REASONS[0],
    "REASON_COMPLAINT": suppressions.REASONS[1],
    "DETAIL_BOUNCE_SUBTYPE": codec.short_key("bounce_subtype"),
    "OTHER_SUFFIX": "=" + stats.OTHER,
    "NO_DOMAIN": dimensions.NONE,  # the domain of an address without one
    **{f"KEY_{family.upper()}": keys.stem(family) for family in LUA_KEY_FAMILIES},
}

_ARRAYS = {
    "ENTRY": ENTRY,
    "MESSAGE": MESSAGE,
    "EVENT": EVENT,
    "BITS": BITS,
    "RECORD": RECORD,
    "ARG": ARG,
    "OPTIONAL_KEY": OPTIONAL_KEYS,
    "LOG": LOG,
    "PLAN": PLAN,
    "ADMISSION": ADMISSION,
    "COUNTED_GROUP": COUNTED_GROUP,
    "LIVE": LIVE,
    "ROLLUP": ROLLUP,
    "APPLIED": APPLIED,
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


_EVENT_FIELDS = len(EVENT)
_NO_PROVIDERS: dict[str, str] = {}


def slim(write: state.MessageWrite, providers: bool) -> tuple:
    """What the script is sent of a write: its events without their statistics
    fields, no groups, and its providers only when forwarding (the forwarded
    entries name each recipient's provider). Field for field in MESSAGE's order."""
    (message_id, header, sent_at, destination, events, sent_known, _, kept, truncated) = write
    cut = _EVENT_FIELDS
    return (
        message_id,
        header,
        sent_at,
        destination,
        [event[:cut] for event in events],
        sent_known,
        (),
        kept if providers else _NO_PROVIDERS,
        truncated,
    )


def in_order(names: tuple[str, ...], **values: Any) -> list[Any]:
    """``values`` as the array ``names`` lays out (every name, no other)."""
    assert values.keys() == set(names), set(names) ^ values.keys()
    return [values[name] for name in names]


def position(array: tuple[str, ...], name: str) -> int:
    """0-based position of ``name`` in ``array`` (Lua's is one more)."""
    return array.index(name)


def lua_prelude(script: str | None = None) -> str:
    """``local EVENT_AT = 5`` ... for every name above: what merge.lua indexes with.

    With ``script``, only the names it mentions: Lua allows a function (the script's
    main chunk included) 200 local variables, and unused constants would spend them.
    """
    lines = ["-- Generated by service.stores.redis.layout: positions and codes, named."]
    constants: list[tuple[str, object]] = []
    for prefix, names in _ARRAYS.items():
        for index, name in enumerate(names, 1):
            constants.append((f"{prefix}_{name.upper()}", index))
    constants += list(CODES.items())
    constants += [(name, f"'{text}'") for name, text in STRINGS.items()]
    constants.append(("REPLY_STRIDE", len(REPLY)))
    constants.append(("OPTIONAL_KEYS", len(OPTIONAL_KEYS)))
    for name, value in constants:
        if script is None or re.search(rf"\b{name}\b", script):
            lines.append(f"local {name} = {value}")
    return "\n".join(lines) + "\n"
