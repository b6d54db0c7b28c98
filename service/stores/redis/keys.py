"""Every Redis key the service writes, in one place, under one prefix (``st:``).

Each key belongs to one *family*: a fixed name (``format``, ``sup-index``) or a fixed
stem followed by a variable part (``sup:<address>``, ``r:<address>``). Variable parts
are whatever an event, a setting or a request carries (addresses, domains, tags, ids,
configuration sets), so no rule about their characters can keep families apart.
What does is the shape of :data:`FAMILIES`: no stem that a variable part follows is
the start of another family's name or stem, so a key names one family whatever its
variable part holds (``idx``, ``:``, braces, nothing, ten kilobytes).
``tests/property/test_key_families.py`` checks the table and feeds hostile names
through every builder.

``merge.lua`` builds the record, index and suppression keys itself, from the stems
here (``service.stores.redis.layout`` hands them to the script as ``KEY_*`` constants).
Records carry their handle in a hash tag (``m:{<handle>}``), so one message's key maps
to one Redis Cluster slot. On a cluster, a slot group's keys sit under
``<prefix>{<tag>}:`` (``service.stores.redis.slots``); no family's name starts with ``{``,
so a group's keys never meet the plain prefix's.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "st:"

# name -> (stem, a variable part follows). No variable family's stem may start another
# family's stem (the module docstring).
FAMILIES: dict[str, tuple[str, bool]] = {
    "format": ("format", False),
    "slot_groups": ("slot-groups", False),
    # Messages and their search indexes (written by merge.lua).
    "record": ("m:", True),
    "recipient": ("r:", True),
    "status": ("x:s:", True),
    "pending": ("x:pending", False),
    "buckets": ("x:buckets", False),
    "send_time_bucket": ("t:", True),
    # Written beside the records, in the same merge.
    "checkpoint": ("ckpt:", True),
    # The change log (service.stores.redis.changelog), and each projection's checkpoint in
    # it and lease on it.
    "changelog": ("log", False),
    "projection": ("proj:", True),
    "projection_lease": ("proj-lease:", True),
    "transitions": ("transitions", False),
    # Set while some process has a live page open (service.live_demand): merge.lua
    # appends to the transitions stream only then.
    "live_watched": ("live-watched", False),
    "forward": ("fwd", False),
    "forward_lease": ("fwd:lease:", True),
    # Outbox entry ids an erasure deleted while some subscription had them pending.
    "forward_erased": ("fwd-erased", False),
    "stats": ("stats:", True),
    # A live bucket's groups, one hash per dimension, and an hour's admission.
    "stats_groups": ("stats-g:", True),
    "stats_admission": ("stats-a:", True),
    "stats_revisions": ("stats-rev", False),
    "rollup": ("hist:", True),
    # The rollup periods written, per step (a zset of starts): history reads only these.
    "rollup_index": ("hist-idx:", True),
    # A rollup's overall figures again, apart from its groups: what most reads want.
    "rollup_overall": ("hist-all:", True),
    "suppression": ("sup:", True),
    "suppressions": ("sup-index", False),
    # The listing again, one zset per reason, so ``?reason=`` pages without filtering.
    "suppressions_by_reason": ("sup-reason:", True),
    # Files `ses-tracker replay` has merged whole (by content digest).
    "replayed": ("replayed:", True),
    # Delivery ids already ingested (service.dedupe).
    "seen": ("seen:", True),
    # Mailbox providers of domains (service.mx).
    "mx": ("mx:", True),
    # Alerting (service.alerts.redis_store).
    "alert_lease": ("al:lease", False),
    "alert_records": ("al:records", False),
    "alert_history": ("al:history", False),
    "alert_entries": ("al:entries", False),
    "alert_accounts": ("al:accounts", False),
    "alert_health": ("al:health", False),
    "alert_outbox": ("al:out:", True),
    # Erasures (service.erasure_job, service.tombstones): the key of the tombstones'
    # hashes, the tombstones (keyed hash -> erased at), each slot group's revision of
    # them (checked by merge.lua), the jobs, their queue, and the lease to work it.
    "erasure_key": ("erasure-key", False),
    "tombstones": ("tombstones", False),
    "erasure_epoch": ("erasure-epoch", False),
    "erasure": ("erasure:", True),
    "erasures": ("erasures", False),
    "erasure_lease": ("erasure-lease", False),
    # Signed-out session ids, until they would have expired (service.sessions).
    "session_revoked": ("session-revoked:", True),
    # The audit log (service.audit), one stream for the service.
    "audit": ("audit", False),
}


def stem(family: str) -> str:
    return FAMILIES[family][0]


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = DEFAULT_PREFIX

    def _fixed(self, family: str) -> str:
        return f"{self.prefix}{FAMILIES[family][0]}"

    @property
    def format(self) -> str:
        """The stored data's format version (service.stores.redis.FORMAT_VERSION)."""
        return self._fixed("format")

    @property
    def slot_groups(self) -> str:
        """How many slot groups the data is split in (service.stores.redis.slots); 0: none."""
        return self._fixed("slot_groups")

    # Messages and their search indexes (written by merge.lua).
    def record(self, handle: str) -> str:
        return f"{self._fixed('record')}{{{handle}}}"

    def recipient(self, address: str) -> str:
        return f"{self._fixed('recipient')}{address}"

    def status(self, name: str) -> str:
        return f"{self._fixed('status')}{name}"

    @property
    def pending(self) -> str:
        return self._fixed("pending")

    @property
    def buckets(self) -> str:
        return self._fixed("buckets")

    def send_time_bucket(self, bucket: str) -> str:
        return f"{self._fixed('send_time_bucket')}{bucket}"

    # Written beside the records, in the same merge.
    def checkpoint(self, name: str) -> str:
        return f"{self._fixed('checkpoint')}{name}"

    @property
    def changelog(self) -> str:
        """The change log stream (service.stores.redis.changelog)."""
        return self._fixed("changelog")

    def projection(self, name: str) -> str:
        """A projection's checkpoint: the last change log entry it applied."""
        return f"{self._fixed('projection')}{name}"

    def projection_lease(self, name: str) -> str:
        return f"{self._fixed('projection_lease')}{name}"

    @property
    def transitions(self) -> str:
        return self._fixed("transitions")

    @property
    def live_watched(self) -> str:
        return self._fixed("live_watched")

    @property
    def forward(self) -> str:
        """The forwarding outbox stream (service.forward), one consumer group per
        subscription."""
        return self._fixed("forward")

    @property
    def forward_erased(self) -> str:
        """Ids of outbox entries an erasure deleted while pending (service.forward)."""
        return self._fixed("forward_erased")

    def forward_lease(self, subscription_id: str) -> str:
        return f"{self._fixed('forward_lease')}{subscription_id}"

    def stats(self, bucket: int) -> str:
        """A live bucket's overall figures (service.stats.LiveBucket)."""
        return f"{self.stats_prefix}{bucket}"

    @property
    def stats_groups_prefix(self) -> str:
        return self._fixed("stats_groups")

    def stats_groups(self, bucket: int, dimension: str) -> str:
        """A live bucket's groups of one dimension (``g:`` fields)."""
        return f"{self.stats_groups_prefix}{bucket}:{dimension}"

    @property
    def stats_admission_prefix(self) -> str:
        return self._fixed("stats_admission")

    def stats_admission(self, hour: int) -> str:
        """The values admitted apart in an hour's live buckets (service.stats.Admission)."""
        return f"{self.stats_admission_prefix}{hour}"

    @property
    def stats_prefix(self) -> str:
        return self._fixed("stats")

    @property
    def rollup_prefix(self) -> str:
        """History rollups: <prefix>hist:<step>:<start> (service.stats.STEPS)."""
        return self._fixed("rollup")

    def rollup(self, step: str, start: int) -> str:
        return f"{self.rollup_prefix}{step}:{start}"

    @property
    def rollup_overall_prefix(self) -> str:
        return self._fixed("rollup_overall")

    def rollup_overall(self, step: str, start: int) -> str:
        """The overall figures (``c:``, ``l:``, ``y:``) of ``rollup(step, start)``, alone."""
        return f"{self.rollup_overall_prefix}{step}:{start}"

    def rollup_index(self, step: str) -> str:
        """zset of the ``step`` rollups written, member and score their start (s)."""
        return f"{self._fixed('rollup_index')}{step}"

    @property
    def stats_revisions(self) -> str:
        """bucket -> the merge sequence that last changed it (service.stats.Revisions)."""
        return self._fixed("stats_revisions")

    # Suppressions (written by merge.lua, which builds the same names).
    def suppression(self, address: str) -> str:
        return f"{self._fixed('suppression')}{address}"

    @property
    def suppressions(self) -> str:
        """zset of suppressed addresses, scored by since (ms)."""
        return self._fixed("suppressions")

    def suppressions_by_reason(self, reason: str) -> str:
        """zset of the addresses suppressed for ``reason``, scored by since (ms)."""
        return f"{self._fixed('suppressions_by_reason')}{reason}"

    def replayed(self, digest: str) -> str:
        return f"{self._fixed('replayed')}{digest}"

    def seen(self, kind: str, digest: str) -> str:
        return f"{self._fixed('seen')}{kind}:{digest}"

    def mx(self, domain: str) -> str:
        return f"{self._fixed('mx')}{domain}"

    # Alerting (service.alerts.redis_store).
    @property
    def alert_lease(self) -> str:
        return self._fixed("alert_lease")

    @property
    def alert_records(self) -> str:
        return self._fixed("alert_records")

    @property
    def alert_history(self) -> str:
        return self._fixed("alert_history")

    @property
    def alert_entries(self) -> str:
        return self._fixed("alert_entries")

    @property
    def alert_accounts(self) -> str:
        return self._fixed("alert_accounts")

    @property
    def alert_health(self) -> str:
        return self._fixed("alert_health")

    def alert_outbox(self, sink_id: str) -> str:
        return f"{self._fixed('alert_outbox')}{sink_id}"

    @property
    def erasure_key(self) -> str:
        return self._fixed("erasure_key")

    @property
    def tombstones(self) -> str:
        return self._fixed("tombstones")

    @property
    def erasure_epoch(self) -> str:
        return self._fixed("erasure_epoch")

    def erasure(self, job_id: str) -> str:
        return f"{self._fixed('erasure')}{job_id}"

    @property
    def erasures(self) -> str:
        return self._fixed("erasures")

    @property
    def erasure_lease(self) -> str:
        return self._fixed("erasure_lease")

    def session_revoked(self, session_id: str) -> str:
        return f"{self._fixed('session_revoked')}{session_id}"

    @property
    def audit(self) -> str:
        return self._fixed("audit")


def family_of(key: str, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The family a key under ``prefix`` belongs to (None: not one of ours). Unique
    because the table is prefix-free."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    for family, (family_stem, variable) in FAMILIES.items():
        if rest == family_stem or (variable and rest.startswith(family_stem)):
            return family
    return None
