"""Keys kept in order, each with a value: the memory store's sorted sets.

A list of short sorted blocks with the largest key of each (the layout of
``sortedcontainers.SortedList``, which is not a dependency): finding a key is two
bisections, and adding or removing one moves at most a block's worth of slots, so
every operation costs O(log n + block) whatever the order keys come in (a list
kept sorted would move O(n) slots for a key added at the front). Reads hand out
copies and take where to resume as a key, so a caller that yields to the event
loop between reads is not upset by writes made meanwhile.

Keys may repeat (two values under one key are kept in the order added); a removal
names the value too. Pure: no I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Any)
V = TypeVar("V")

# Blocks split past twice this; a read or write touches one block of ~this size.
BLOCK = 256


class SortedIndex(Generic[K, V]):
    __slots__ = ("_keys", "_len", "_maxes", "_values")

    def __init__(self) -> None:
        self._keys: list[list[K]] = []
        self._values: list[list[V]] = []
        self._maxes: list[K] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, key: K, value: V) -> None:
        maxes = self._maxes
        if not maxes:
            self._keys.append([key])
            self._values.append([value])
            maxes.append(key)
            self._len = 1
            return
        block = bisect_right(maxes, key)
        if block == len(maxes):
            # Past every key: the usual case for send times and suppressions.
            block -= 1
            self._keys[block].append(key)
            self._values[block].append(value)
            maxes[block] = key
        else:
            keys = self._keys[block]
            at = bisect_right(keys, key)
            keys.insert(at, key)
            self._values[block].insert(at, value)
        self._len += 1
        if len(self._keys[block]) > 2 * BLOCK:
            self._split(block)

    def remove(self, key: K, value: V) -> bool:
        """Drop ``value`` filed under ``key``; False when it is not there."""
        maxes = self._maxes
        block = bisect_left(maxes, key)
        while block < len(maxes):
            keys = self._keys[block]
            at = bisect_left(keys, key)
            values = self._values[block]
            while at < len(keys) and keys[at] == key:
                if values[at] is value or values[at] == value:
                    del keys[at]
                    del values[at]
                    self._len -= 1
                    self._settle(block)
                    return True
                at += 1
            if at < len(keys):
                return False  # passed the key inside this block
            block += 1
        return False

    def below(self, bound: K | None, count: int, *, inclusive: bool = False) -> list[tuple[K, V]]:
        """Up to ``count`` entries with keys under ``bound`` (every key when None; up to
        and including it when ``inclusive``), largest first."""
        found: list[tuple[K, V]] = []
        if not self._maxes or count <= 0:
            return found
        if bound is None:
            block = len(self._maxes) - 1
            at = len(self._keys[block])
        else:
            side = bisect_right if inclusive else bisect_left
            block = side(self._maxes, bound)
            if block == len(self._maxes):
                block -= 1
                at = len(self._keys[block])
            else:
                at = side(self._keys[block], bound)
        while block >= 0 and len(found) < count:
            keys, values = self._keys[block], self._values[block]
            start = max(0, at - (count - len(found)))
            found += zip(reversed(keys[start:at]), reversed(values[start:at]), strict=True)
            block -= 1
            if block >= 0:
                at = len(self._keys[block])
        return found

    def lowest(self, count: int) -> list[tuple[K, V]]:
        """Up to ``count`` entries with the smallest keys, smallest first."""
        found: list[tuple[K, V]] = []
        for keys, values in zip(self._keys, self._values, strict=True):
            if len(found) >= count:
                break
            take = count - len(found)
            found += zip(keys[:take], values[:take], strict=True)
        return found

    def _split(self, block: int) -> None:
        keys, values = self._keys[block], self._values[block]
        self._keys[block : block + 1] = [keys[:BLOCK], keys[BLOCK:]]
        self._values[block : block + 1] = [values[:BLOCK], values[BLOCK:]]
        self._maxes[block : block + 1] = [keys[BLOCK - 1], keys[-1]]

    def _settle(self, block: int) -> None:
        """After a removal: keep the block's largest key right, drop it when empty."""
        keys = self._keys[block]
        if keys:
            self._maxes[block] = keys[-1]
            return
        del self._keys[block]
        del self._values[block]
        del self._maxes[block]
