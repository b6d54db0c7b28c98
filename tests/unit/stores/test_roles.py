"""The store's interface is a few narrow roles, and the cache wraps only what it caches."""

from __future__ import annotations

import inspect

from service.stores import CachedStore, MemoryStore, RedisStore
from service.stores.base import (
    Admin,
    Erasing,
    ErasureJobs,
    Merging,
    Messages,
    Statistics,
    Store,
    Suppressions,
)

ROLES = (Merging, Messages, Statistics, Suppressions, Erasing, ErasureJobs, Admin)


def _methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if name[0] != "_"}


def test_every_role_is_at_most_six_methods_and_the_store_adds_none() -> None:
    for role in ROLES:
        own = {
            name for name in vars(role) if not name.startswith("_") and callable(vars(role)[name])
        }
        assert 0 < len(own) <= 6, (role.__name__, own)
    assert _methods(Store) == set().union(*(_methods(role) for role in ROLES))


def test_both_backends_play_every_role() -> None:
    for backend in (MemoryStore, RedisStore):
        for role in ROLES:
            assert issubclass(backend, role)


def test_the_cache_defines_only_what_it_caches() -> None:
    assert issubclass(CachedStore, Store)
    # get (cached), merge and erase_record (drop what they touch), describe.
    assert _methods(CachedStore) == {"get", "merge", "erase_record", "describe"}
