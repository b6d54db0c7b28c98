"""GET /v1/audit (contract): every state change other than ingest — an erasure
requested, a suppression removed, a session opened and signed out, a reload asked
on the admin port or made by a changed file — with when, which token by name, what
and the result; addresses only as the keyed hash their tombstone has; paged, newest
first; kept beside the data with Redis (every replica's entries in one log)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from service import audit, tombstones
from service.audit import AuditEntry, AuditQuery, MemoryAuditLog, RedisAuditLog
from service.clock import wall_clock_ms
from service.settings import Settings
from service.stores.redis.erasures import erasure_key
from service.stores.redis.keyspace import RedisKeyspace
from tests.support import ses
from tests.support.push import admin_client
from tests.support.redis import RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

API = "audit-api-token-0123456789abcdef"
READ = "audit-read-token-0123456789abcdef"
GONE = "gone@x.com"
RULES = """rules:
  - name: {name}
    kind: bounce_rate
    warn: 0.05
    window_s: 600
"""


def settings_for(tmp_path: Path, **extra: Any) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(name="bounces"))
    return Settings(
        _env_file=None,
        api_token=API,
        read_tokens=f"support:{READ}",
        alert_rules=rules,
        config_poll_s=0.05,
        cache_ttl_s=0,
        **extra,
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def audited(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get("/v1/audit", params=params, headers=bearer(READ))
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def until_audited(client: httpx.AsyncClient, action: str, count: int) -> list[dict]:
    async with asyncio.timeout(10):
        while True:
            found = [e for e in await audited(client) if e["action"] == action]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


async def exercise(settings: Settings, tmp_path: Path) -> tuple[list[dict], bytes]:
    """Every audited change, through the API and the admin port; the whole log, and
    everything the audit kept, as bytes."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
            admin_client(app) as admin,
        ):
            runtime = app.state.runtime
            t0 = wall_clock_ms() - 600_000  # recent: kept, and suppressing
            body = ses.dumps(
                ses.send("m-audit", [GONE], t0), ses.bounce("m-audit", [GONE], t0 + 500, sent_at=t0)
            )
            posted = await client.post("/v1/events", content=body, headers=bearer(API))
            assert posted.status_code == 202
            # A read token changes nothing, and nothing is audited for it.
            refused = await client.delete(f"/v1/suppressions/{GONE}", headers=bearer(READ))
            assert refused.status_code == 403
            assert (await client.delete(f"/v1/suppressions/{GONE}", headers=bearer(API))).is_success
            missing = await client.delete("/v1/suppressions/never@x.com", headers=bearer(API))
            assert missing.status_code == 404
            erased = await client.delete(f"/v1/recipients/{GONE}", headers=bearer(API))
            assert erased.status_code == 202
            signed_in = await client.post("/v1/session", json={"token": READ})
            assert signed_in.status_code == 204
            signed_out = await client.delete("/v1/session")
            assert signed_out.status_code == 204
            assert (await admin.post("/-/reload")).status_code == 200
            # Swapped whole, as a ConfigMap's files are (a poll never reads half).
            edited = tmp_path / "rules.yaml.new"
            await asyncio.to_thread(edited.write_text, RULES.format(name="bounces_tight"))
            await asyncio.to_thread(os.replace, edited, tmp_path / "rules.yaml")
            await until_audited(client, audit.CONFIG_RELOADED, 2)
            entries = await audited(client)
            kept = b"".join(entry.to_bytes() for _, entry in await _all(runtime.audit.log))
            scrape = (await admin.get("/metrics")).text
            assert 'ses_tracker_audit_entries_total{result="recorded"} 7.0' in scrape
            return entries, kept


async def _all(log: audit.AuditLog) -> list[tuple[str, AuditEntry]]:
    entries, _ = await log.page(AuditQuery(limit=audit.MAX_PAGE))
    return entries


def check(entries: list[dict], kept: bytes, digest: str) -> None:
    by_action: dict[str, list[dict]] = {}
    for entry in entries:
        by_action.setdefault(entry["action"], []).append(entry)
    removed, not_found = by_action[audit.SUPPRESSION_REMOVED][::-1]  # newest first
    assert (removed["actor"], removed["result"], removed["target"]) == ("api", "removed", digest)
    assert not_found["result"] == "not suppressed" and not_found["target"] != digest
    [erasure] = by_action[audit.ERASURE_REQUESTED]
    assert (erasure["actor"], erasure["result"], erasure["target"]) == ("api", "accepted", digest)
    assert erasure["detail"]  # the job's id
    [opened] = by_action[audit.SESSION_OPENED]
    [closed] = by_action[audit.SESSION_CLOSED]
    assert (opened["actor"], opened["detail"]) == ("support", "read")
    assert (closed["actor"], closed["result"]) == ("support", "signed out")
    reloads = by_action[audit.CONFIG_RELOADED]
    assert {(r["actor"], r["target"], r["result"]) for r in reloads} == {
        (audit.ADMIN_PORT, "rules", "reloaded"),
        (audit.FILE_CHANGE, "rules", "reloaded"),
    }
    # Newest first, ids ordered.
    ids = [tuple(int(part) for part in e["id"].split("-")) for e in entries]
    assert ids == sorted(ids, reverse=True)
    # The address never, in the answer or in what the log keeps.
    assert GONE not in str(entries)
    assert GONE.encode() not in kept


async def test_every_change_is_audited_in_memory(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    entries, kept = await exercise(settings, tmp_path)
    # The memory store's key: the hash the erasure's tombstone has.
    assert len({e["target"] for e in entries if e["action"] == audit.ERASURE_REQUESTED}) == 1
    digest = next(e["target"] for e in entries if e["action"] == audit.ERASURE_REQUESTED)
    check(entries, kept, digest)


async def test_every_change_is_audited_beside_the_data(
    redis_target: RedisTarget, tmp_path: Path
) -> None:
    await redis_target.flush()
    settings = settings_for(tmp_path, **redis_target.settings())
    entries, kept = await exercise(settings, tmp_path)
    keyspace = RedisKeyspace.connect(
        redis_target.url,
        cluster=redis_target.cluster,
        slot_groups=settings.redis_slot_group_count(),
    )
    try:
        key = await erasure_key(keyspace.client, keyspace.keys)
        check(entries, kept, tombstones.digest(key, GONE))
        # The erasure's own tombstone has the same hash: one key for both.
        stored = await keyspace.client.hkeys(keyspace.keys.tombstones)
        assert tombstones.digest(key, GONE).encode() in stored
        # Nothing under the audit's key names the address.
        raw = b"".join(
            b"".join(fields.values())
            for _, fields in await keyspace.client.xrange(keyspace.keys.audit)
        )
        assert raw and GONE.encode() not in raw
    finally:
        await keyspace.client.aclose()


async def test_entries_about_one_address_are_found_by_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for address in (GONE, "other@x.com", GONE.upper()):
                await client.delete(f"/v1/recipients/{address}", headers=bearer(API))
            mine = await audited(client, address="Gone@X.com")
            assert len(mine) == 2 and all(e["action"] == audit.ERASURE_REQUESTED for e in mine)
            # Paged: one at a time, newest first, then none left.
            first = await client.get("/v1/audit", params={"limit": 1}, headers=bearer(READ))
            page = first.json()
            assert len(page["items"]) == 1 and page["next_cursor"] == page["items"][0]["id"]
            rest = await client.get(
                "/v1/audit", params={"limit": 10, "cursor": page["next_cursor"]},
                headers=bearer(READ),
            )  # fmt: skip
            assert len(rest.json()["items"]) == 2 and rest.json()["next_cursor"] is None
            # Bounded and checked: a page of at most 1,000; a cursor is an entry id.
            too_many = await client.get("/v1/audit", params={"limit": 5_000}, headers=bearer(READ))
            assert too_many.status_code == 422
            odd = await client.get("/v1/audit", params={"cursor": "x'; --"}, headers=bearer(READ))
            assert odd.status_code == 422
            assert (await client.get("/v1/audit")).status_code == 401


async def test_the_logs_keep_bounded_entries_in_order(redis_target: RedisTarget) -> None:
    await redis_target.flush()
    keyspace = RedisKeyspace.connect(redis_target.url, cluster=redis_target.cluster)
    try:
        for log in (MemoryAuditLog(kept=5), RedisAuditLog(keyspace)):
            # A clock that steps back still gives ordered ids.
            start = wall_clock_ms()
            for n, step in enumerate([0, 20, 10, 30, 30]):
                entry = AuditEntry(start + step, "x" * 1_000, audit.CONFIG_RELOADED, f"r{n}")
                await log.append(entry)
            await asyncio.sleep(0.05)
            since = wall_clock_ms()
            for n in (5, 6):
                await log.append(AuditEntry(since + 10, "api", audit.CONFIG_RELOADED, f"r{n}"))
            entries, following = await log.page(AuditQuery(limit=3))
            assert [e.result for _, e in entries] == ["r6", "r5", "r4"]
            assert all(len(e.actor) == audit.MAX_TEXT for _, e in entries[2:])
            older, _ = await log.page(AuditQuery(limit=10, before=following))
            assert [e.result for _, e in older][:2] == ["r3", "r2"]
            recent, _ = await log.page(AuditQuery(limit=10, since_ms=since))
            assert [e.result for _, e in recent] == ["r6", "r5"]
        memory_entries, _ = await MemoryAuditLog(kept=5).page(AuditQuery())
        assert memory_entries == []
    finally:
        await keyspace.client.aclose()


async def test_an_audit_that_cannot_be_written_is_said_not_raised() -> None:
    class Down(MemoryAuditLog):
        async def append(self, entry: AuditEntry) -> None:
            raise ConnectionError("store down")

    async def hash_address(address: str) -> str:
        return "h"

    auditor = audit.Auditor(Down(), hash_address, lambda: 1)
    await auditor.record("api", audit.SUPPRESSION_REMOVED, "removed", address=GONE)
    assert (auditor.recorded, auditor.failed) == (0, 1)
