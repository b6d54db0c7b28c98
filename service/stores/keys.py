"""Every Redis key the service writes, in one place, under one prefix (``st:``).

``merge.lua`` builds the record and search-index keys itself from the same prefix
(the script is this module's twin for them: change both together). Records carry
their handle in a hash tag (``m:{<handle>}``), so one message's key maps to one
Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "st:"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = DEFAULT_PREFIX

    @property
    def format(self) -> str:
        """The stored data's format version (service.stores.redis.FORMAT_VERSION)."""
        return f"{self.prefix}format"

    @property
    def slot_groups(self) -> str:
        """How many slot groups the data is split in (service.stores.slots); 0: none."""
        return f"{self.prefix}slot-groups"

    # Messages and their search indexes (written by merge.lua).
    def record(self, handle: str) -> str:
        return f"{self.prefix}m:{{{handle}}}"

    def recipient(self, address: str) -> str:
        return f"{self.prefix}r:{address}"

    def status(self, name: str) -> str:
        return f"{self.prefix}x:s:{name}"

    @property
    def pending(self) -> str:
        return f"{self.prefix}x:pending"

    @property
    def buckets(self) -> str:
        return f"{self.prefix}x:buckets"

    def send_time_bucket(self, bucket: str) -> str:
        return f"{self.prefix}t:{bucket}"

    # Written beside the records, in the same merge.
    def checkpoint(self, name: str) -> str:
        return f"{self.prefix}ckpt:{name}"

    @property
    def transitions(self) -> str:
        return f"{self.prefix}transitions"

    @property
    def forward(self) -> str:
        """The forwarding outbox stream (service.forward), one consumer group per
        subscription."""
        return f"{self.prefix}fwd"

    def forward_lease(self, subscription_id: str) -> str:
        return f"{self.prefix}fwd:lease:{subscription_id}"

    def stats(self, bucket: int) -> str:
        """A live bucket's overall figures (service.stats.LiveBucket)."""
        return f"{self.stats_prefix}{bucket}"

    @property
    def stats_groups_prefix(self) -> str:
        return f"{self.prefix}stats-g:"

    def stats_groups(self, bucket: int, dimension: str) -> str:
        """A live bucket's groups of one dimension (``g:`` fields)."""
        return f"{self.stats_groups_prefix}{bucket}:{dimension}"

    @property
    def stats_admission_prefix(self) -> str:
        return f"{self.prefix}stats-a:"

    def stats_admission(self, hour: int) -> str:
        """The values admitted apart in an hour's live buckets (service.stats.Admission)."""
        return f"{self.stats_admission_prefix}{hour}"

    @property
    def stats_prefix(self) -> str:
        return f"{self.prefix}stats:"

    @property
    def rollup_prefix(self) -> str:
        """History rollups: <prefix>hist:<step>:<start> (service.stats.STEPS)."""
        return f"{self.prefix}hist:"

    def rollup(self, step: str, start: int) -> str:
        return f"{self.rollup_prefix}{step}:{start}"

    @property
    def stats_revisions(self) -> str:
        """bucket -> the merge sequence that last changed it (service.stats.Revisions)."""
        return f"{self.prefix}stats:rev"

    # Suppressions (written by merge.lua, which builds the same names).
    def suppression(self, address: str) -> str:
        return f"{self.prefix}sup:{address}"

    @property
    def suppressions(self) -> str:
        """zset of suppressed addresses, scored by since (ms)."""
        return f"{self.prefix}sup:idx"

    # Files `ses-tracker replay` has merged whole (by content digest).
    def replayed(self, digest: str) -> str:
        return f"{self.prefix}replayed:{digest}"

    # Delivery ids already ingested (service.dedupe).
    def seen(self, kind: str, digest: str) -> str:
        return f"{self.prefix}seen:{kind}:{digest}"

    # Alerting (service.alerts.redis_store).
    @property
    def alert_lease(self) -> str:
        return f"{self.prefix}al:lease"

    @property
    def alert_records(self) -> str:
        return f"{self.prefix}al:records"

    @property
    def alert_history(self) -> str:
        return f"{self.prefix}al:history"

    @property
    def alert_entries(self) -> str:
        return f"{self.prefix}al:entries"

    @property
    def alert_accounts(self) -> str:
        return f"{self.prefix}al:accounts"

    @property
    def alert_health(self) -> str:
        return f"{self.prefix}al:health"

    def alert_outbox(self, sink_id: str) -> str:
        return f"{self.prefix}al:out:{sink_id}"
