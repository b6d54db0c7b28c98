"""No key family can meet another, whatever a variable part holds (service.stores.redis.keys)."""

from __future__ import annotations

import inspect

from hypothesis import given
from hypothesis import strategies as st

from service.stores.redis.keys import DEFAULT_PREFIX, FAMILIES, RedisKeys, family_of
from service.stores.redis.slots import group_prefixes

HOSTILE = [
    "idx",
    "index",
    "rev",
    ":",
    "{",
    "}",
    "{}",
    "|",
    "=",
    "",
    "x" * 10_240,
    "idx}:{0}",
    "sup:idx",
    "lease",
    "pending",
]
names = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))

# Every builder, and how to call it with one variable part (None: a fixed name).
VARIABLE = {
    "record": lambda k, v: k.record(v),
    "recipient": lambda k, v: k.recipient(v),
    "status": lambda k, v: k.status(v),
    "send_time_bucket": lambda k, v: k.send_time_bucket(v),
    "checkpoint": lambda k, v: k.checkpoint(v),
    "forward_lease": lambda k, v: k.forward_lease(v),
    "projection": lambda k, v: k.projection(v),
    "projection_lease": lambda k, v: k.projection_lease(v),
    "stats": lambda k, v: k.stats_prefix + v,
    "stats_groups": lambda k, v: k.stats_groups(0, v),
    "stats_admission": lambda k, v: k.stats_admission_prefix + v,
    "rollup": lambda k, v: k.rollup(v, 0),
    "rollup_index": lambda k, v: k.rollup_index(v),
    "rollup_overall": lambda k, v: k.rollup_overall(v, 0),
    "suppression": lambda k, v: k.suppression(v),
    "suppressions_by_reason": lambda k, v: k.suppressions_by_reason(v),
    "replayed": lambda k, v: k.replayed(v),
    "seen": lambda k, v: k.seen(v, v),
    "mx": lambda k, v: k.mx(v),
    "alert_outbox": lambda k, v: k.alert_outbox(v),
    "session_revoked": lambda k, v: k.session_revoked(v),
    "erasure": lambda k, v: k.erasure(v),
}
FIXED = [family for family, (_, variable) in FAMILIES.items() if not variable]


def every_key(keys: RedisKeys, value: str) -> dict[str, str]:
    built = {family: build(keys, value) for family, build in VARIABLE.items()}
    built.update({family: getattr(keys, family) for family in FIXED})
    return built


def test_the_table_is_prefix_free_where_a_variable_part_follows() -> None:
    stems = {family: stem for family, (stem, _) in FAMILIES.items()}
    assert len(set(stems.values())) == len(stems)
    for family, (stem, variable) in FAMILIES.items():
        assert not stem.startswith("{"), family  # never meets a slot group's prefix
        if not variable:
            continue
        for other, other_stem in stems.items():
            if other != family:
                assert not other_stem.startswith(stem), (family, other)


def test_every_family_has_a_builder_here() -> None:
    assert set(VARIABLE) | set(FIXED) == set(FAMILIES)
    methods = {
        name
        for name, member in inspect.getmembers(RedisKeys)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }
    prefixes = {
        "stats_prefix",
        "rollup_prefix",
        "rollup_overall_prefix",
        "stats_groups_prefix",
        "stats_admission_prefix",
    }
    assert methods - prefixes - {"prefix"} <= set(FAMILIES)


@given(a=names, b=names, groups=st.sampled_from([None, 3, 16]))
def test_no_two_families_meet_whatever_their_names_hold(a: str, b: str, groups: int | None) -> None:
    prefixes = [DEFAULT_PREFIX, *group_prefixes(DEFAULT_PREFIX, groups)]
    seen: dict[str, tuple[str, str]] = {}
    for prefix in dict.fromkeys(prefixes):
        keys = RedisKeys(prefix)
        for value in (a, b):
            for family, key in every_key(keys, value).items():
                assert family_of(key, prefix) == family, (family, key[:80])
                owner = seen.setdefault(key, (prefix, family))
                assert owner[1] == family, (key[:80], owner, family)
