"""Erasing a recipient address from alerts: the rule (alerts.erasure) and the memory
store, with and without its state directory (the Redis store:
tests/integration/test_alert_store_erasure.py)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from service.alerts.erasure import ERASED, erase_from_alert, erase_from_record
from service.alerts.lifecycle import AlertRecord, Phase, Plan
from service.alerts.model import Alert, Example, alert_to_dict
from service.alerts.store import MemoryAlertStore, OutboxEntry
from tests.support.chat import sample_alert

GONE = "gone@example.com"
KEPT = "kept@example.com"
T = 1_700_000_000_000
SINKS = ["slack-1", "hook-1"]


def naming(gone: str, kept: str, key: str = "overdue") -> Alert:
    """An alert quoting ``gone`` everywhere alerts can, and ``kept`` in one example."""
    return sample_alert(
        key=key,
        title=f"Mail to {gone} overdue",
        summary=f"2 recipients overdue; {gone} for 3 h.",
        figures={"overdue recipients": "2", gone: "3 h"},
        worst={"example.com": f"2 ({gone})"},
        examples=(
            Example("m-1", gone, "sent", {"code": "mailbox_full", "summary": f"{gone} is full"}),
            Example("m-2", kept, f"sent, like {gone}", {"code": "ok", "summary": f"{kept} fine"}),
        ),
        link=f"https://tracker.example/?message=m-1&to={quote(gone, safe='')}",
    )


def quiet(kept: str, key: str = "bounce") -> Alert:
    """An alert naming only ``kept``."""
    return sample_alert(key=key, examples=(Example("m-3", kept, "550 user unknown"),))


def firing(alert: Alert, subjects: tuple[str, ...] = ("example.com",)) -> AlertRecord:
    return AlertRecord(alert.key, Phase.FIRING, T, T, subjects, alert.severity, alert)


# --- the rule --------------------------------------------------------------------------


def test_an_example_naming_the_address_keeps_its_message_but_not_its_recipient() -> None:
    erased = erase_from_alert(naming(GONE, KEPT), GONE)
    assert erased is not None
    first, second = erased.examples
    assert first == Example("m-1", None, "sent", None)
    # Another recipient's example stays, its text without the address.
    assert second == Example(
        "m-2", KEPT, f"sent, like {ERASED}", {"code": "ok", "summary": f"{KEPT} fine"}
    )
    assert erased.title == f"Mail to {ERASED} overdue"
    assert erased.summary == f"2 recipients overdue; {ERASED} for 3 h."
    assert erased.figures == {"overdue recipients": "2", ERASED: "3 h"}
    assert erased.worst == {"example.com": f"2 ({ERASED})"}
    assert erased.link == f"https://tracker.example/?message=m-1&to={ERASED}"  # percent-encoded too
    assert (erased.key, erased.rule, erased.started_at) == ("overdue", "bounce_rate", T)
    assert GONE not in orjson.dumps(alert_to_dict(erased)).decode()


def test_an_alert_not_naming_the_address_is_left_as_it_is() -> None:
    assert erase_from_alert(quiet(KEPT), GONE) is None
    assert erase_from_alert(naming(GONE, KEPT), "other@example.com") is None
    # Once erased, there is nothing left to erase.
    erased = erase_from_alert(naming(GONE, KEPT), GONE)
    assert erased is not None and erase_from_alert(erased, GONE) is None


def test_a_record_loses_the_address_from_its_notice_and_its_subjects() -> None:
    record = firing(quiet(KEPT), subjects=("example.com", GONE))
    erased = erase_from_record(record, GONE)
    assert erased is not None
    assert erased.subjects == ("example.com", ERASED) and erased.alert == record.alert
    pending = AlertRecord("overdue", Phase.PENDING, T)
    assert erase_from_record(pending, GONE) is None
    assert erase_from_record(firing(quiet(KEPT)), GONE) is None


# --- the memory store ------------------------------------------------------------------


@pytest.fixture(params=["memory", "directory"])
def directory(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return None if request.param == "memory" else tmp_path / "alerts"


async def filled(directory: Path | None) -> MemoryAlertStore:
    """Two records, two notices and four outbox entries; half of each names GONE."""
    store = MemoryAlertStore(directory)
    gone, kept = naming(GONE, KEPT), quiet(KEPT)
    plan = Plan(upserts={a.key: firing(a) for a in (gone, kept)}, deletes=[], notices=[gone, kept])
    assert await store.commit("me", plan, SINKS, T)
    return store


async def stored(store: MemoryAlertStore) -> bytes:
    """Everything the store hands out, as bytes: records, history, every outbox entry."""
    records = [r.to_dict() for r in (await store.records()).values()]
    history = [alert_to_dict(a) for a in await store.history(1_000)]
    entries = [e.to_json() for sink in SINKS for e in await store.claim(sink, T, T, 1_000)]
    await store.release([e for sink in SINKS for e in await store.claim(sink, T, T, 1_000)], T)
    return orjson.dumps([records, history]) + b"".join(entries)


def files_naming(directory: Path, text: str) -> list[Path]:
    """The files under ``directory`` whose bytes hold ``text`` (every file for "")."""
    files = (path for path in directory.rglob("*") if path.is_file())
    return [path for path in files if text.encode() in path.read_bytes()]


async def test_the_memory_store_erases_the_address_from_everything(directory: Path | None) -> None:
    store = await filled(directory)
    assert GONE.encode() in await stored(store)
    # One record, one notice, and its entry for each of the two sinks.
    assert await store.erase_address(GONE) == 4
    everything = await stored(store)
    assert GONE.encode() not in everything and KEPT.encode() in everything
    assert everything.count(ERASED.encode()) > 0
    assert await store.erase_address(GONE) == 0
    # Rewritten, not dropped: as many of each as before, the examples' messages kept.
    assert len(await store.records()) == 2 and len(await store.history(10)) == 2
    assert await store.pending("slack-1") == 2 and await store.pending("hook-1") == 2
    [erased] = [a for a in await store.history(10) if a.key == "overdue"]
    assert [e.message_id for e in erased.examples] == ["m-1", "m-2"]
    assert erased.examples[0].recipient is None and erased.examples[0].diagnosis is None


async def test_the_memory_store_leaves_no_trace_in_its_files(tmp_path: Path) -> None:
    directory = tmp_path / "alerts"
    store = await filled(directory)
    # What the directory may hold beside its live files: an entry set aside as
    # unreadable, and a write a crash interrupted.
    (directory / "outbox" / "00000000000001-x-0000.unreadable").write_bytes(
        b'{"id": "00000000000001-x-0000", "alert": {"summary": "' + GONE.encode() + b" and"
    )
    (directory / "outbox" / "00000000000002-y-0000.tmp").write_bytes(orjson.dumps([GONE]))
    assert await store.erase_address(GONE) == 4 + 2

    assert {path.suffix for path in files_naming(directory, "")} == {".json", ".unreadable"}
    assert not files_naming(directory, GONE)  # the .tmp went, the rest was rewritten
    assert files_naming(directory, KEPT)
    assert (
        b"(erased) and" in (directory / "outbox" / "00000000000001-x-0000.unreadable").read_bytes()
    )

    # Restarted on the same directory, it has what was erased, without the address.
    reloaded = MemoryAlertStore(directory)
    assert await stored(reloaded) == await stored(store)
    assert GONE.encode() not in await stored(reloaded)
    assert len(await reloaded.records()) == 2 and await reloaded.pending("slack-1") == 2
    assert await reloaded.erase_address(GONE) == 0


async def test_an_entry_rescheduled_after_an_erasure_does_not_bring_the_address_back(
    directory: Path | None,
) -> None:
    store = await filled(directory)
    claimed = await store.claim("slack-1", T, T + 1, 10)
    assert any(GONE in str(alert_to_dict(e.alert)) for e in claimed)
    assert await store.erase_address(GONE) == 4
    # The sender still holds the copies it claimed, with the address, and fails.
    for entry in claimed:
        await store.reschedule(entry, T)
    again = await store.claim("slack-1", T, T + 1, 10)
    assert [e.attempts for e in again] == [1, 1]
    assert GONE.encode() not in b"".join(e.to_json() for e in again)
    if directory is not None:
        assert not files_naming(directory, GONE)
        reloaded = MemoryAlertStore(directory)
        assert GONE.encode() not in b"".join(
            e.to_json() for e in await reloaded.claim("slack-1", T, T, 10)
        )
    # A finished entry stays finished.
    await store.finish(again[0])
    await store.reschedule(again[0], T)
    assert await store.pending("slack-1") == 1


def test_an_outbox_entry_reads_back_as_erased() -> None:
    """The outbox's own encoding round-trips an erased alert (recipient None)."""
    erased = erase_from_alert(naming(GONE, KEPT), GONE)
    assert erased is not None
    entry = OutboxEntry("00000000000001-x-0000", "slack-1", erased, T)
    assert OutboxEntry.from_json(entry.to_json()) == entry
