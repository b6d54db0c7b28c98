from __future__ import annotations

from fastapi import APIRouter, Request

from api.auth import token_principal
from api.deps import RuntimeDep
from api.responses import OrjsonResponse
from api.schemas import HealthAnswer, ReadyAnswer

router = APIRouter()


@router.get("/healthz", response_model=HealthAnswer)
async def healthz() -> OrjsonResponse:
    """The process is alive and serving; says nothing about its dependencies."""
    return OrjsonResponse({"status": "ok"})


@router.get("/readyz", response_model=ReadyAnswer, responses={503: {"model": ReadyAnswer}})
async def readyz(request: Request, runtime: RuntimeDep) -> OrjsonResponse:
    """Ready while the store answers: lookups, search and the push endpoints work.

    A broker or queue outage does not make the service unready (it would take every
    replica out of a load balancer while lookups still work); each source's state
    is in the body and in ``/metrics``. Details (the store's address, failure texts,
    forwarding hosts and errors, poison reasons) can name hosts, accounts and queues:
    the admin port shows them whole; on the public port, which answers any Host
    (probes), only a caller presenting a token, the API token or a read token, sees
    them, and an open service (no token set) shows them to nobody.
    """
    store_ok = await runtime.store.ping()
    # On the admin port everything: the port is the protection (api.admin).
    detailed = getattr(request.app.state, "is_admin", False) or presents_a_token(request)
    consumers = {}
    for source in runtime.sources:
        status = source.status()
        if not detailed and status.get("failure"):
            status["failure"] = "failing (details with the API token)"
        consumers[source.name] = status
    counters = {
        name: {
            "records": c.records,
            "events": c.events,
            "rejected": c.rejected,
            "ignored": c.ignored,
            # Recipients dropped from kept events, by code (too_many, bad_address).
            "recipients_dropped": dict(c.dropped_reasons),
            # Messages the store refused to merge (poison, parked): not an outage.
            "merge_refused": c.merge_refused,
        }
        for name, c in runtime.pipeline.counters.items()
    }
    body = {
        "status": "ready" if store_ok else "unavailable",
        "store": store_ok,
        "store_kind": _store_kind(runtime.store.describe(), detailed),
        "sources_healthy": runtime.sources_healthy(),
        "consumers": consumers,
        "sources": counters,
        # By the events' own time (README, Live figures by event time).
        "event_lag_s": runtime.event_lags(),
        "catching_up": runtime.catching_up(),
        "catch_up_after_s": runtime.settings.catch_up_lag_s,
        "forwarding": runtime.forwarding(detailed),
        # The newest poison (README, Poison): a store refusing these is no outage.
        "parked": [
            {
                "source": p.source,
                "message_id": p.message_id,
                "reason": p.reason if detailed else "(details with the API token)",
            }
            for p in runtime.pipeline.parked
        ],
    }
    return OrjsonResponse(body, status_code=200 if store_ok else 503)


def presents_a_token(request: Request) -> bool:
    """A configured token was presented: ``api.deps.presents_token`` is also true
    for everyone when the service is open, which says nothing about the caller."""
    principal = token_principal(request)
    return principal is not None and principal.name is not None


def _store_kind(described: str, detailed: bool) -> str:
    """``RedisStore(10.0.0.5:6379/0)`` whole with a token, else ``RedisStore``."""
    return described if detailed else described.split("(", 1)[0].strip()
