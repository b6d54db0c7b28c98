"""bench.bench_merge_parts in small: every part it switches off is still found in
merge.lua (a rename would otherwise measure nothing), and switching one off costs
Redis less, never more, than `serve` with a live page open."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.bench_merge_parts import PARTS, SERVE, WATCHED, measure, report, script_without
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_every_part_is_found_in_the_script() -> None:
    for part in PARTS:
        assert script_without(part) != script_without(None), part


async def test_the_table_has_every_part(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)  # its own: each round empties it
    redis.start()
    try:
        best = await measure(redis.url, messages=300, rounds=1)
    finally:
        redis.stop()
    assert set(best) == {SERVE, WATCHED, *(f"- {part}" for part in PARTS)}
    assert all(value > 0 for value in best.values())
    out = io.StringIO()
    report(best, out)
    assert out.getvalue().count("\n") == len(best) + 1
