"""The Redis store, one module a concern, around one keyspace object.

- ``keyspace``: the client, the slot groups and every key family (``keys``), given
  to every Redis-backed part of the service (alerts, forwarding, sessions, MX,
  dedupe); ``errors``: the one mapping of a Redis outage to ``StoreUnavailable``;
  ``slots``: slot groups on a Redis Cluster; ``lease``: the one lease script.
- ``store``: :class:`RedisStore`, the merge and the reads the ``Store`` roles name;
  the Python half of the merge call in ``layout`` (what crosses into ``merge.lua``,
  position by position) and ``merge_cost`` (how a batch is cut into calls);
  ``record`` and ``search`` read records and the search indexes back.
- ``changelog``, ``projection`` (+ ``project.lua``): the change log the merge
  appends and the statistics projected from it; ``rollup_cache`` serves closed
  history periods.
- ``migrations``, ``stats_migration``: the stored format's version and its steps.
- ``memory``: Redis's own memory figures, for the metrics.
"""

from service.stores.redis.store import RedisStore

__all__ = ["RedisStore"]
