"""A wall clock in epoch ms that tests set and step by hand."""

from __future__ import annotations


class ManualClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms
