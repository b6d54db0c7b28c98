"""Issue #23.6: NDJSON with junk lines keeps its good records, and replay names the
file and line of each rejected one."""

from __future__ import annotations

from pathlib import Path

import orjson

from consumers.replay import chunks, replay
from service.events import Reason
from service.parser import parse_payload
from service.pipeline import Pipeline
from service.stores import MemoryStore
from tests.support import ses

MID = "0100018bcafe0001-aaaa-bbbb-cccc-000000000006-000000"
SEND = ses.dumps(ses.send(MID, ["jane@example.com"]))
DELIVERY = ses.dumps(ses.delivery(MID, ["jane@example.com"], ses.SENT_AT + 900))


def test_a_good_send_survives_a_junk_line_after_it() -> None:
    result = parse_payload(SEND + b"\nnot json")
    assert (result.accepted, result.rejected_count) == (1, 1)
    [issue] = result.rejected
    assert (issue.index, issue.code, issue.offset) == (1, Reason.INVALID_JSON, len(SEND) + 1)


def test_junk_lines_are_rejected_one_by_one_between_good_records() -> None:
    body = b"\n".join([b"garbage", SEND, b"", b"[1,", DELIVERY, b"42", b"\xff\xfe"])
    result = parse_payload(body)
    assert [event.type.label for event in result.events] == ["send", "delivery"]
    assert [(i.index, i.code) for i in result.rejected] == [
        (0, Reason.INVALID_JSON),
        (2, Reason.INVALID_JSON),
        (4, Reason.NOT_OBJECT),
        (5, Reason.NOT_UTF8),
    ]


def test_crlf_lines_and_indented_records_are_lines_too() -> None:
    result = parse_payload(b"  " + SEND + b"\r\nnot json\r\n\t" + DELIVERY + b"\r\n")
    assert (result.accepted, result.rejected_count) == (2, 1)


def test_a_broken_object_line_falls_back_to_the_concatenated_framing() -> None:
    """A line opening an object that does not parse may be a pretty-printed or
    truncated record: read as objects back to back, as before."""
    pretty = orjson.dumps(ses.send(MID + "-p", ["mary@example.com"]), option=orjson.OPT_INDENT_2)
    result = parse_payload(SEND + b"\n" + pretty + b"\n" + SEND[:-20] + b"\n" + DELIVERY)
    assert sorted(e.message_id for e in result.events) == [MID, MID, MID + "-p"]
    assert result.rejected_count == 1


def test_lines_of_json_values_that_are_not_objects_are_each_judged() -> None:
    result = parse_payload(b'1\n[2]\n"three"')
    assert result.codes == {Reason.NOT_OBJECT: 3}


def test_a_single_object_and_an_array_say_where_their_records_begin() -> None:
    bad = b'{"eventType": "Zap"}'
    assert parse_payload(b"\n\n  " + bad).rejected[0].offset == 4
    # Inside a JSON array the parser does not know: replay falls back to numbers.
    assert parse_payload(b"[" + SEND + b"," + bad + b"]").rejected[0].offset is None


async def test_replay_names_the_file_and_line_of_each_rejected_record(tmp_path: Path) -> None:
    (tmp_path / "mixed.ndjson").write_bytes(
        b"\n".join([SEND, b"not json", b"", DELIVERY, b'{"eventType": "Zap"}', b"oops"])
    )
    (tmp_path / "array.json").write_bytes(b"[" + SEND + b', {"eventType": "Zap"}]')
    store = MemoryStore()
    report = await replay([tmp_path], Pipeline(store))
    assert report.events == 3
    assert (await store.get(MID)).status() == "delivered"
    assert [r.where() for r in report.rejections] == [
        f"{tmp_path / 'array.json'}, record 2",
        f"{tmp_path / 'mixed.ndjson'}:2",
        f"{tmp_path / 'mixed.ndjson'}:5",
        f"{tmp_path / 'mixed.ndjson'}:6",
    ]


async def test_replay_counts_lines_across_payloads(tmp_path: Path, monkeypatch) -> None:
    """A file cut into several payloads still names the file's own line."""
    payloads: list[bytes] = []

    def small_chunks(data: bytes):
        for payload in chunks(data, size=len(SEND) * 3):
            payloads.append(payload)
            yield payload

    monkeypatch.setattr("consumers.replay.chunks", small_chunks)
    lines = [SEND] * 10 + [b"not json"] + [SEND] * 5 + [b"oops"]
    (tmp_path / "big.ndjson").write_bytes(b"\n".join(lines))
    report = await replay([tmp_path], Pipeline(MemoryStore()), dry_run=True)
    assert len(payloads) > 4 and report.events == 15
    assert [r.line for r in report.rejections] == [11, 17]
