"""The live stream of transitions, as followers read it (``service.feed``): one
stream per slot group, polled together, resumed from the last id read."""

from __future__ import annotations

from typing import Any

import msgpack

from service import state
from service.state import Transition
from service.stores.redis import layout
from service.stores.redis.errors import unavailable
from service.stores.redis.groups import GroupedReads
from service.stores.redis.slots import poll_groups

_NEW_RECIPIENT = layout.CODES["NEW_RECIPIENT"]
_NO_LATENCY = layout.CODES["NO_LATENCY"]
# A stream follower's read per group per poll (a "$" position reads none).
_FOLLOW_COUNT = 1_000


class TransitionReads(GroupedReads):
    """Following the store's transitions stream."""

    @property
    def transitions_keys(self) -> list[str]:
        return [group.keys.transitions for group in self._groups]

    async def follow_transitions(
        self, after: str = "$", block_ms: int = 1_000
    ) -> tuple[str, list[Transition]]:
        """Transitions appended after stream id ``after`` (waits up to ``block_ms``).

        Returns the id to pass next time, so a follower that reconnects resumes where
        it stopped (within the stream's retained length). With slot groups, the id is the
        slot groups' ids joined by spaces, and the slot groups' streams are polled.
        """
        keys = self.transitions_keys
        positions = after.split(" ") if after != "$" else ["$"] * len(keys)
        if len(positions) != len(keys):
            positions = ["$"] * len(keys)  # a place from another layout: from now on
        transitions: list[Transition] = []
        with unavailable("read"):
            if len(keys) == 1:
                reply = await self._client.xread({keys[0]: positions[0]}, block=block_ms)
                positions[0] = _read_entries(reply, positions[0], transitions)
                return positions[0], transitions

            async def read_each() -> list[Transition]:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, position in zip(keys, positions, strict=True):
                        pipe.xread({key: position}, count=_FOLLOW_COUNT)
                    replies = await pipe.execute()
                for number, reply in enumerate(replies):
                    positions[number] = _read_entries(reply, positions[number], transitions)
                return transitions

            await poll_groups(read_each, block_ms)
            return " ".join(positions), transitions

    async def last_transition_id(self) -> str:
        """The id of the newest stream entry ("0-0" when empty): where to start
        following (one per group, joined by spaces)."""
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for key in self.transitions_keys:
                    pipe.xrevrange(key, count=1)
                replies = await pipe.execute()
        return " ".join(entries[0][0].decode() if entries else "0-0" for entries in replies)


def status_or_new(code: int) -> str | None:
    return None if code == _NEW_RECIPIENT else state.STATUSES[code]


def _read_entries(reply: Any, position: str, into: list[Transition]) -> str:
    """Appends the transitions of an XREAD reply; returns the stream's new position."""
    for _stream, entries in reply or ():
        for entry_id, fields in entries:
            position = entry_id.decode()
            for message_id, address, old, new, at, latency in msgpack.unpackb(
                fields[layout.FIELD_TRANSITIONS.encode()], raw=False
            ):  # layout.FED
                into.append(
                    Transition(
                        message_id=message_id,
                        recipient=address,
                        from_status=status_or_new(old),
                        to_status=state.STATUSES[new],
                        at=int(at),
                        latency_ms=None if latency == _NO_LATENCY else int(latency),
                    )
                )
    return position
