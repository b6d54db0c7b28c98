"""Mailbox providers of company domains, from their MX records (``SES_TRACKER_RESOLVE_MX``).

A company on Google Workspace or Microsoft 365 receives mail at its own domain, so
only its MX hosts say that Gmail's or Microsoft's filters judge its mail
(``service.providers.MX_SUFFIXES``). Lookups stay off the hot path: merging a
recipient of an unknown domain only *notes* the domain, which counts as ``other``
until a background task has its answer. Answers are cached (in Redis when there
is one, so replicas and restarts share them) with a TTL, negative ones (no MX, no
such domain, a name that is no hostname) too; a temporary failure is retried
later. Everything is bounded, since the domains come from whoever mail is sent to:
the domains waiting, the domains remembered, and the lookups per second.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver
import structlog
from redis import asyncio as aioredis

from service.providers import OTHER, provider_of_mx
from service.stores.errors import REDIS_UNAVAILABLE
from service.stores.keys import RedisKeys

log = structlog.get_logger(__name__)

MAX_PENDING = 10_000
MAX_KNOWN = 100_000
LOOKUPS_PER_S = 20.0
TTL_S = 7 * 86_400
NEGATIVE_TTL_S = 86_400
RETRY_AFTER_FAILURE_S = 600
LOOKUP_TIMEOUT_S = 3.0
_BATCH = 100
_HOSTNAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

# MX hosts of a domain, lowest preference first; [] for none; None when the lookup
# failed for now (not cached as an answer).
Lookup = Callable[[str], Awaitable[list[str] | None]]


class MxCache:
    """Answers shared through Redis (``<prefix>mx:<domain>``), or kept in process."""

    def __init__(self, client: aioredis.Redis | None = None, prefix: str = "st:") -> None:
        self._client = client
        self._keys = RedisKeys(prefix)

    async def get_many(self, domains: Sequence[str]) -> list[str | None]:
        if self._client is None or not domains:
            return [None] * len(domains)
        try:
            # GETs, not one MGET: on a Redis Cluster the domains' keys are in many slots.
            async with self._client.pipeline(transaction=False) as pipe:
                for domain in domains:
                    pipe.get(self._keys.mx(domain))
                raw = await pipe.execute()
        except REDIS_UNAVAILABLE:
            return [None] * len(domains)  # look them up; the cache is an optimisation
        return [None if value is None else value.decode() for value in raw]

    async def put(self, domain: str, provider: str, ttl_s: int) -> None:
        if self._client is None:
            return
        try:
            await self._client.set(self._keys.mx(domain), provider, ex=ttl_s)
        except REDIS_UNAVAILABLE:
            log.warning("mx_cache_write_failed", domain=domain)


def dns_lookup(nameservers: Sequence[str] = ()) -> Lookup:
    """MX lookups through dnspython's asyncio resolver: the system's (resolv.conf), or
    ``nameservers`` as ``host`` or ``host:port``."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        hosts, ports = zip(*(_host_port(n) for n in nameservers), strict=True)
        resolver.nameservers = list(hosts)
        resolver.port = ports[0]
    else:
        resolver = dns.asyncresolver.Resolver()

    async def lookup(domain: str) -> list[str] | None:
        try:
            answer = await resolver.resolve(domain, "MX", lifetime=LOOKUP_TIMEOUT_S, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._cache = cache or MxCache()
        self._max_pending = max_pending
        self._max_known = max_known
        self._interval = 1.0 / lookups_per_s
        self._clock = clock
        # domain -> provider, for the domains that have one (not "other").
        self.providers: dict[str, str] = {}
        # domain -> when to look it up again (inf while waiting), oldest first.
        self._known: OrderedDict[str, float] = OrderedDict()
        self._pending: deque[str] = deque()
        self._wake = asyncio.Event()
        self.lookups = 0
        self.failures = 0
        self.dropped = 0

    def note(self, domain: str) -> None:
        """A recipient domain that counted as ``other``: look it up, in the background."""
        again = self._known.get(domain)
        if again is not None and again > self._clock():
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
        at most ``lookups_per_s``."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
                cached = await self._cache.get_many(batch)
                for domain, provider in zip(batch, cached, strict=True):
                    if provider is not None:
                        self._learn(
                            domain, provider, TTL_S if provider != OTHER else NEGATIVE_TTL_S
                        )
                    else:
                        await self._resolve(domain)

    async def _resolve(self, domain: str) -> None:
        if not _HOSTNAME.match(domain):
            self._learn(domain, OTHER, NEGATIVE_TTL_S)  # no lookup for a non-hostname
            return
        self.lookups += 1
        hosts = await self._lookup(domain)
        await asyncio.sleep(self._interval)
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
