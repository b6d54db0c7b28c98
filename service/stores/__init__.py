"""State stores: one interface (:class:`Store`), memory and Redis behind it."""

from service.stores.base import Checkpoint, MergeRejected, Store, StoreUnavailable
from service.stores.cached import CachedStore
from service.stores.memory import MemoryStore
from service.stores.redis.store import RedisStore

__all__ = [
    "CachedStore",
    "Checkpoint",
    "MemoryStore",
    "MergeRejected",
    "RedisStore",
    "Store",
    "StoreUnavailable",
]
