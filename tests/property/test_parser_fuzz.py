"""Fuzzing the parser: arbitrary bytes and mutated real records never raise, and the
work it does (characters read, counted rather than timed) stays linear."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.parser import parse_payload

SEEDS = sorted((Path(__file__).parents[1] / "data" / "seeds").glob("*.json"))
SEED_RECORDS = [orjson.loads(path.read_bytes()) for path in SEEDS]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def check(body: bytes) -> None:
    result = parse_payload(body)
    assert result.records >= 1
    assert result.accepted + result.rejected_count + result.ignored_count == result.records
    assert len(result.rejected) <= 100 and len(result.ignored) <= 100
    assert result.scanned <= 6 * len(body) + 200_000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes(body: bytes) -> None:
    check(body)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    record = draw(st.sampled_from(SEED_RECORDS))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(record)))
        record = _replace(record, path, draw(json_values))
    body = orjson.dumps(record)
    cut = draw(st.integers(0, len(body)))
    shape = draw(st.sampled_from(["whole", "cut", "twice", "inserted", "array"]))
    if shape == "cut":
        return body[:cut]
    if shape == "twice":
        return body[:cut] + body
    if shape == "inserted":
        return body[:cut] + draw(st.binary(max_size=20)) + body[cut:]
    if shape == "array":
        return b"[" + body + b"," + body + b"]"
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_seed())
def test_mutated_seed_records(body: bytes) -> None:
    check(body)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_seed(), min_size=2, max_size=6), st.sampled_from([b"", b"\n", b"\n\n"]))
def test_mutated_records_back_to_back(bodies: list[bytes], separator: bytes) -> None:
    check(separator.join(bodies))
