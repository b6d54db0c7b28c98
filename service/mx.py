"""Mailbox providers of company domains, from their MX records (``SES_TRACKER_RESOLVE_MX``).

A company on Google Workspace or Microsoft 365 receives mail at its own domain, so
only its MX hosts say that Gmail's or Microsoft's filters judge its mail
(``service.providers.MX_SUFFIXES``). Lookups stay off the hot path: merging a
recipient of an unknown domain only *notes* the domain, which counts as ``other``
until a background task has its answer. Answers are cached (in Redis when there
is one, so replicas and restarts share them) with a TTL, negative ones (no MX, no
such domain, a name that is no hostname) too; a timeout is cached as ``other`` for
:data:`TIMEOUT_TTL_S` (a slow name is not asked again meanwhile, by any replica),
another temporary failure is retried later. Internal names (``*.internal``,
``*.svc.cluster.local``...) never go to DNS: they would ask the cluster's resolver
about its own services for whoever mail is sent to, and are ``other``.
Everything is bounded, since the domains come from whoever mail is sent to: the
domains waiting, the domains remembered, the lookups per second, the lookups in
flight (several at once, so one slow name cannot hold the others), and each
lookup's time.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import dns.asyncresolver
import dns.exception
import dns.resolver
import structlog

from service.logs import loggable
from service.providers import OTHER, provider_of_mx
from service.stores.redis.errors import REDIS_UNAVAILABLE
from service.stores.redis.keys import RedisKeys
from service.stores.redis.keyspace import RedisKeyspace

log = structlog.get_logger(__name__)

MAX_PENDING = 10_000
MAX_KNOWN = 100_000
LOOKUPS_PER_S = 20.0
TTL_S = 7 * 86_400
NEGATIVE_TTL_S = 86_400
RETRY_AFTER_FAILURE_S = 600
LOOKUP_TIMEOUT_S = 3.0
# A name whose lookup timed out counts as other this long before it is asked again.
TIMEOUT_TTL_S = 600
MAX_IN_FLIGHT = 8
_BATCH = 100
# A single label, then at least one more: single-label names never match.
_HOSTNAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# Names no public mailbox lives under, which a resolver inside a network may answer
# (RFC 6761/6762/8375, Kubernetes' cluster domain, common private zones).
INTERNAL_SUFFIXES = (
    "internal",
    "local",
    "localhost",
    "localdomain",
    "svc.cluster.local",
    "cluster.local",
    "lan",
    "home",
    "home.arpa",
    "corp",
    "intranet",
    "private",
    "invalid",
)

# MX hosts of a domain, lowest preference first; [] for none; None when the lookup
# failed for now (not cached as an answer). Raises TimeoutError when it timed out.
Lookup = Callable[[str], Awaitable[list[str] | None]]


class Cached(NamedTuple):
    provider: str
    ttl_s: float  # what is left of the answer's time in the cache


def is_internal(domain: str) -> bool:
    """A name under an internal suffix, or a single label: never sent to DNS."""
    name = domain.rstrip(".")
    return "." not in name or any(
        name == suffix or name.endswith("." + suffix) for suffix in INTERNAL_SUFFIXES
    )


class MxCache:
    """Answers shared through Redis (``<prefix>mx:<domain>``), or kept in process."""

    def __init__(self, keyspace: RedisKeyspace | None = None) -> None:
        """Without a keyspace, nothing is cached across processes."""
        self._client = keyspace.client if keyspace is not None else None
        self._keys = keyspace.keys if keyspace is not None else RedisKeys()

    async def get_many(self, domains: Sequence[str]) -> list[Cached | None]:
        """Each domain's cached provider and the time its entry has left."""
        if self._client is None or not domains:
            return [None] * len(domains)
        try:
            # GETs, not one MGET: on a Redis Cluster the domains' keys are in many slots.
            async with self._client.pipeline(transaction=False) as pipe:
                for domain in domains:
                    key = self._keys.mx(domain)
                    pipe.get(key)
                    pipe.pttl(key)
                raw = await pipe.execute()
        except REDIS_UNAVAILABLE:
            return [None] * len(domains)  # look them up; the cache is an optimisation
        found: list[Cached | None] = []
        for value, pttl in zip(raw[::2], raw[1::2], strict=True):
            if value is None:
                found.append(None)
                continue
            provider = value.decode()
            default = TTL_S if provider != OTHER else NEGATIVE_TTL_S
            # A timeout is cached for minutes: remembered for what is left, not a day.
            left = pttl / 1000 if isinstance(pttl, int) and pttl > 0 else default
            found.append(Cached(provider, min(left, default)))
        return found

    async def put(self, domain: str, provider: str, ttl_s: int) -> None:
        if self._client is None:
            return
        try:
            await self._client.set(self._keys.mx(domain), provider, ex=ttl_s)
        except REDIS_UNAVAILABLE:
            log.warning("mx_cache_write_failed", domain=domain)


def dns_lookup(nameservers: Sequence[str] = (), timeout_s: float | None = None) -> Lookup:
    """MX lookups through dnspython's asyncio resolver: the system's (resolv.conf), or
    ``nameservers`` as ``host`` or ``host:port``; each gives up after ``timeout_s``
    (:data:`LOOKUP_TIMEOUT_S`) with TimeoutError."""
    lifetime = LOOKUP_TIMEOUT_S if timeout_s is None else timeout_s
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        hosts, ports = zip(*(_host_port(n) for n in nameservers), strict=True)
        resolver.nameservers = list(hosts)
        resolver.port = ports[0]
    else:
        resolver = dns.asyncresolver.Resolver()

    async def lookup(domain: str) -> list[str] | None:
        try:
            answer = await resolver.resolve(domain, "MX", lifetime=lifetime, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise TimeoutError(domain) from None
        except dns.exception.DNSException:
            return None
        ordered = sorted(answer, key=lambda record: record.preference)  # type: ignore[attr-defined]
        return [str(record.exchange) for record in ordered]  # type: ignore[attr-defined]

    return lookup


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else (server, 53)


class MxResolver:
    """Learns the providers of company domains; ``providers`` is what the merge reads
    (``service.dimensions.Dimensions.resolved``), ``note`` what it calls."""

    def __init__(
        self,
        lookup: Lookup,
        cache: MxCache | None = None,
        *,
        max_pending: int = MAX_PENDING,
        max_known: int = MAX_KNOWN,
        lookups_per_s: float = LOOKUPS_PER_S,
        max_in_flight: int = MAX_IN_FLIGHT,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._cache = cache or MxCache()
        self._max_pending = max_pending
        self._max_known = max_known
        self._interval = 1.0 / lookups_per_s
        self._max_in_flight = max_in_flight
        # A guard around any lookup (dns_lookup has its own, a little shorter).
        self._timeout_s = (LOOKUP_TIMEOUT_S if timeout_s is None else timeout_s) + 0.5
        self._clock = clock
        # domain -> provider, for the domains that have one (not "other").
        self.providers: dict[str, str] = {}
        # domain -> when to look it up again (inf while waiting), oldest first.
        self._known: OrderedDict[str, float] = OrderedDict()
        self._pending: deque[str] = deque()
        self._wake = asyncio.Event()
        self.lookups = 0
        self.failures = 0
        self.timeouts = 0
        self.skipped = 0  # no hostname, or an internal one: never asked
        self.dropped = 0

    def note(self, domain: str) -> None:
        """A recipient domain that counted as ``other``: look it up, in the background."""
        again = self._known.get(domain)
        if again is not None and again > self._clock():
            return
        if not _HOSTNAME.match(domain) or is_internal(domain):
            # Answered here, without DNS or the cache: no hostname, or an internal one.
            self.skipped += 1
            self._learn(domain, OTHER, NEGATIVE_TTL_S)
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._remember(domain, float("inf"))
        self._pending.append(domain)
        self._wake.set()

    def _remember(self, domain: str, again: float) -> None:
        self._known[domain] = again
        self._known.move_to_end(domain)
        while len(self._known) > self._max_known:
            forgotten, _ = self._known.popitem(last=False)
            self.providers.pop(forgotten, None)

    def _learn(self, domain: str, provider: str, ttl_s: float) -> None:
        if provider != OTHER:
            self.providers[domain] = provider
        else:
            self.providers.pop(domain, None)
        self._remember(domain, self._clock() + ttl_s)

    async def run(self) -> None:
        """Answer noted domains until cancelled: cached answers first, then lookups
        started at most ``lookups_per_s``, at most ``max_in_flight`` at once."""
        slots = asyncio.Semaphore(self._max_in_flight)
        in_flight: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        next_start = loop.time()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slots.release()

        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    count = min(_BATCH, len(self._pending))
                    batch = [self._pending.popleft() for _ in range(count)]
                    cached = await self._cache.get_many(batch)
                    for domain, hit in zip(batch, cached, strict=True):
                        if hit is not None:
                            self._learn(domain, hit.provider, hit.ttl_s)
                            continue
                        await slots.acquire()
                        # Starts are paced, not ends: a slow answer holds a slot only.
                        delay = next_start - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        next_start = max(next_start, loop.time()) + self._interval
                        task = asyncio.create_task(self._resolve(domain))
                        in_flight.add(task)
                        task.add_done_callback(finished)
        finally:
            for task in in_flight:
                task.cancel()

    async def _resolve(self, domain: str) -> None:
        self.lookups += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                hosts = await self._lookup(domain)
        except TimeoutError:
            # Shared like an answer: no replica asks a slow name again for a while.
            self.timeouts += 1
            self.failures += 1
            self._learn(domain, OTHER, TIMEOUT_TTL_S)
            await self._cache.put(domain, OTHER, TIMEOUT_TTL_S)
            log.info("mx_lookup_timed_out", domain=domain)  # a hostname: short
            return
        except Exception:  # a task's error would be lost: count it as a failure
            hosts = None
            log.warning("mx_lookup_failed", domain=loggable(domain), exc_info=True)
        if hosts is None:
            self.failures += 1
            self.providers.pop(domain, None)
            self._remember(domain, self._clock() + RETRY_AFTER_FAILURE_S)
            return
        provider = provider_of_mx(hosts)
        ttl = TTL_S if hosts else NEGATIVE_TTL_S
        self._learn(domain, provider, ttl)
        await self._cache.put(domain, provider, ttl)
        log.debug("mx_resolved", domain=domain, provider=provider)
