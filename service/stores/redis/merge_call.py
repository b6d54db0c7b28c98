"""The Python half of a ``merge.lua`` call: its KEYS and ARGV, in the order and
under the names ``layout`` gives them, and its reply read back.

One call merges one slot group's part of a batch (or a chunk of it, cut by
``merge_cost``). Besides the records it names the optional parts the script writes
with them (checkpoint, change log, live stream and its watchers' flag, forwarding
outbox, the tombstones' revision), each only when sent; on a cluster, every other
key the script may touch (``declared``). Index entries a call found that may be
dead wait here for the group's next call to check (``trim``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgpack

from service import state, stats, tombstones
from service.search import message_handle
from service.state import MessageWrite, Transition
from service.stores.base import PAST_RETENTION_HOLD_S, Checkpoint
from service.stores.redis import changelog, layout
from service.stores.redis.groups import SlotGroup
from service.stores.redis.keys import RedisKeys
from service.stores.redis.keyspace import RedisKeyspace
from service.stores.redis.projection import LOG_KEEP_S
from service.stores.redis.search import SEND_TIME_BUCKET_MS
from service.stores.redis.transitions import status_or_new
from service.suppressions import REASONS as SUPPRESSION_REASONS


class MergeCalls:
    """Builds each call of a store (``RedisStore.merge`` sends them) and reads its
    reply. ``feed_window_s``: the live stream kept that long (None: not written);
    ``feed_when_watched``: written only while some process has a live page open
    (``service.live_demand``); ``forward_keep_s``: the forwarding outbox kept that
    long (None: not written)."""

    def __init__(
        self,
        keyspace: RedisKeyspace,
        *,
        retention_s: int,
        feed_window_s: float | None,
        feed_when_watched: bool,
        forward_keep_s: float | None,
        suppression_days: int,
    ) -> None:
        self._keyspace = keyspace
        self._retention_s = str(int(retention_s))
        self._retention_ms = int(retention_s * 1000)
        self._feed_window_ms = None if feed_window_s is None else int(feed_window_s * 1000)
        self._feed_when_watched = feed_when_watched
        self._forward_keep_ms = None if forward_keep_s is None else int(forward_keep_s * 1000)
        self._suppression_keep_s = suppression_days * 86_400
        # Per group: index entries that may be dead, for its next call to check.
        self._trims: list[dict[tuple[str, str], str]] = [{} for _ in keyspace.groups]

    def args(
        self,
        group: SlotGroup,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None,
        counting: stats.Counting | None,
        erased: tombstones.Tombstones,
    ) -> tuple[list[str], list[str | bytes]]:
        group_keys = group.keys
        handles = [message_handle(write.message_id) for write in writes]
        keys = [group_keys.record(handle) for handle in handles]
        # The writes in their tuples' order, cut to what the script reads (layout).
        forwarding = self._forward_keep_ms is not None
        batch = [
            (layout.slim(write, forwarding), handle)
            for write, handle in zip(writes, handles, strict=True)
        ]
        trim = self._take_trims(group.number)
        now_ms = time.time_ns() // 1_000_000
        # The parts sent, each with its key (KEYS after the records, in the order
        # layout.OPTIONAL_KEYS names them; a part not sent has no key).
        optional: dict[str, tuple[str, bytes]] = {}
        if checkpoint is not None:
            packed = pack(dict(checkpoint.positions))
            optional["checkpoint"] = (group_keys.checkpoint(checkpoint.name), packed)
        context = b""
        if counting is not None:
            # What the statistics projection counts, after the merge (changelog).
            packed = pack(layout.in_order(layout.LOG, min_id_ms=now_ms - LOG_KEEP_S * 1000))
            optional["log"] = (group_keys.changelog, packed)
            context = changelog.pack_context(writes, counting)
        # History (a replay, the demo's seeded days: nothing counted live) is not
        # news: nothing of it goes to the live stream or the forwarding outbox.
        news = counting is None or counting.live
        if self._feed_window_ms is not None and news:
            packed = pack(layout.in_order(layout.FEED, min_id_ms=now_ms - self._feed_window_ms))
            optional["feed"] = (group_keys.transitions, packed)
            if self._feed_when_watched:
                optional["watched"] = (group_keys.live_watched, b"1")
        if self._forward_keep_ms is not None and news:
            packed = pack(layout.in_order(layout.FORWARD, min_id_ms=now_ms - self._forward_keep_ms))
            optional["forward"] = (group_keys.forward, packed)
        # The tombstones' revision the writes were stripped against (merge.lua checks).
        optional["erasures"] = (group_keys.erasure_epoch, erased.epochs[group.number].encode())
        keys += [optional[name][0] for name in layout.OPTIONAL_KEYS if name in optional]
        sent = {name: optional.get(name, ("", b""))[1] for name in layout.OPTIONAL_KEYS}
        index = layout.in_order(
            layout.INDEX,
            prefix=group_keys.prefix,
            bucket_ms=SEND_TIME_BUCKET_MS,
            status_names=list(state.STATUSES),
            oldest_live_ms=now_ms - self._retention_ms,
        )
        args = layout.in_order(
            layout.ARG,
            ttl_s=self._retention_s,
            status_table=state.STATUS_TABLE,
            max_fields=str(state.MAX_RECORD_FIELDS),
            batch=pack(batch),
            log_context=context,
            index=pack(index),
            max_recipients=str(state.MAX_RECIPIENTS),
            max_blob_bytes=str(state.MAX_RECORD_BLOB_BYTES),
            # Replays (nothing counted live) hold messages past the retention briefly.
            hold_s=str(PAST_RETENTION_HOLD_S if counting is not None and not counting.live else 0),
            suppress=pack(
                layout.in_order(layout.SUPPRESS, keep_s=self._suppression_keep_s, now_ms=now_ms)
            )
            if self._suppression_keep_s
            else b"",
            trim=pack(trim) if trim else b"",
            declared="1" if self._keyspace.slot_groups is not None else "",
            **sent,
        )
        if self._keyspace.slot_groups is not None:
            keys += declared(group_keys, writes, trim)
        return keys, args

    def _take_trims(self, number: int) -> list[str]:
        """The group's pending trim candidates, flattened as ARGV[trim] takes them."""
        pending = self._trims[number]
        flat: list[str] = []
        while pending and len(flat) < 3 * _TRIMS_PER_CALL:
            (index_key, member), probe = pending.popitem()
            flat += [index_key, member, probe]
        return flat

    def _note_trims(self, number: int, candidates: list[str]) -> None:
        """Index entries a call found that may be dead, checked by the group's next
        call (their probe keys declared in its KEYS). Bounded: what does not fit is
        found again at a later add, or by a reader."""
        pending = self._trims[number]
        for i in range(0, len(candidates), 3):
            if len(pending) >= _TRIMS_KEPT:
                return
            pending[candidates[i], candidates[i + 1]] = candidates[i + 2]

    def read_reply(
        self, number: int, writes: Sequence[MessageWrite], reply: bytes
    ) -> tuple[list[Transition], dict[str, str]]:
        """The transitions a call of group ``number`` made, and the messages it refused
        (message id -> the script's error); notes its trim candidates."""
        changes, candidates, refusals = msgpack.unpackb(reply, raw=False)
        self._note_trims(number, candidates)
        refused = {}
        for at in range(0, len(refusals), 2):
            position, error = refusals[at : at + 2]
            refused[writes[position - 1].message_id] = str(error)[:300]
        return transitions_of(writes, changes), refused


_STRIDE = len(layout.REPLY)
_MESSAGE_INDEX = layout.position(layout.REPLY, "message_index")
_EVENT_INDEX = layout.position(layout.REPLY, "event_index")
_ADDRESS = layout.position(layout.REPLY, "address")
_FROM = layout.position(layout.REPLY, "from_status")
_TO = layout.position(layout.REPLY, "to_status")
_DESTINATION_EVENT = layout.CODES["DESTINATION_EVENT"]


def pack(value: Any) -> bytes:
    # Redis's bundled cmsgpack predates msgpack's bin type: bytes go as str.
    return msgpack.packb(value, use_bin_type=False)


def transitions_of(writes: Sequence[MessageWrite], reply: list) -> list[Transition]:
    transitions: list[Transition] = []
    for i in range(0, len(reply), _STRIDE):
        write = writes[reply[i + _MESSAGE_INDEX] - 1]
        event_index = reply[i + _EVENT_INDEX]
        if event_index == _DESTINATION_EVENT:
            at = write.first_at
        else:
            at = write.events[event_index - 1].at
        transitions.append(
            Transition(
                message_id=write.message_id,
                recipient=reply[i + _ADDRESS],
                from_status=status_or_new(reply[i + _FROM]),
                to_status=state.STATUSES[reply[i + _TO]],
                at=at,
                latency_ms=max(0, at - write.sent_at) if write.sent_known else None,
            )
        )
    return transitions


# Trim candidates checked per call, and kept waiting per slot group.
_TRIMS_PER_CALL = 256
_TRIMS_KEPT = 2_048
_PROBLEM_STATUSES = state.STATUSES[layout.CODES["PROBLEM_FIRST"] :]


def declared(keys: RedisKeys, writes: Sequence[MessageWrite], trim: list[str]) -> list[str]:
    """Every key beyond the fixed ones that merge.lua may touch for these writes:
    their send-time buckets, their addresses' indexes and suppressions, the shared
    indexes, and the trim candidates' keys. A superset is harmless; a key missing is refused by the
    script (its twin is ``given`` in merge.lua)."""
    names = {keys.pending, keys.buckets, keys.suppressions}
    names.update(keys.suppressions_by_reason(reason) for reason in SUPPRESSION_REASONS)
    names.update(keys.status(name) for name in _PROBLEM_STATUSES)
    addresses: set[str] = set()
    unsafe: set[str] = set()
    for write in writes:
        names.add(keys.send_time_bucket(str(max(0, write.sent_at) // SEND_TIME_BUCKET_MS)))
        addresses.update(write.destination)
        for event in write.events:
            for address, bits in event.recipient_bits:
                addresses.add(address)
                if bits & state.UNSAFE:
                    unsafe.add(address)  # only these can become suppressions
    names.update(keys.recipient(address) for address in addresses)
    names.update(keys.suppression(address) for address in unsafe)
    names.update(trim[0::3])
    names.update(trim[2::3])
    return list(names)
