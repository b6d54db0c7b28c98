"""Per-client request rate limits for the ingest endpoints: token buckets, bounded.

Each client gets ``burst`` tokens at once and ``rate_per_s`` a second after that. A
client is keyed by ``service.peers.client_key``: its IPv4 address or its IPv6 /64,
as the proxy headers name it when the TCP peer is a trusted proxy (uvicorn's
``FORWARDED_ALLOW_IPS``: the proxy's CIDR, walked from the right), else the peer's;
``api.deps.rate_limited`` decides who is exempt. A request costs one token, plus one per
:data:`BYTES_PER_TOKEN` of its body once inflated (charged when the body has been
read): a big body costs parse work in proportion, so it costs tokens in proportion.
The table of clients is bounded: the least recently seen is forgotten first, which
only ever gives a client a full bucket again. Pure: the clock is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_CLIENTS = 10_000
# One more token per this many bytes of (inflated) body.
BYTES_PER_TOKEN = 256 * 1024


def body_cost(size: int) -> int:
    """Tokens a body of ``size`` inflated bytes costs beyond its request's one."""
    return size // BYTES_PER_TOKEN


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.limited = 0

    def take(self, client: str, now: float, cost: float = 1.0) -> float:
        """0 when ``client`` may spend ``cost`` tokens now (they are spent); else the
        seconds until it may (nothing is spent).

        A cost over ``burst`` is charged as ``burst``: it could never be paid.
        """
        cost = min(cost, float(self.burst))
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            elapsed = max(0.0, now - bucket.at)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_s)
            bucket.at = now
        self._buckets[client] = bucket
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        self.limited += 1
        return (cost - bucket.tokens) / self.rate_per_s
