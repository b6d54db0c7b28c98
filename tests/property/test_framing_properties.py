"""Issue #23.6: every good record survives its neighbours.

When a payload is not NDJSON because some lines are junk, every line that opens an
object and parses is a record of its own, and each junk line is rejected on its own,
located at the byte it begins (so replay names its line)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.events import Reason
from service.parser import parse_payload
from tests.support import ses

T = ses.SENT_AT


def good_record(n: int) -> bytes:
    """A compact SES record (one line, as NDJSON writers put them) for message n."""
    mid = f"0100018b-framing-{n:06d}-000000"
    kind = n % 4
    if kind == 0:
        return ses.dumps(ses.send(mid, [f"r{n}@x.com"]))
    if kind == 1:
        return ses.dumps(ses.sns(ses.delivery(mid, [f"r{n}@x.com"], T + 1_000)))
    if kind == 2:
        return ses.dumps(ses.eventbridge(ses.bounce(mid, [f"r{n}@x.com"], T + 2_000)))
    return ses.dumps(ses.complaint(mid, [f"r{n}@x.com"], T + 3_000))


# A junk line: any bytes but a newline, not opening an object (after JSON's white
# space); text and raw bytes alike, so invalid UTF-8 and stray JSON values too.
_junk_text = st.text(
    st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=40
).map(lambda text: text.encode())
_junk_bytes = st.binary(max_size=40).map(lambda data: data.replace(b"\n", b""))
junk_lines = (
    (_junk_text | _junk_bytes | st.sampled_from([b"not json", b"1", b'"x"', b"[1,", b"]", b"}"]))
    .filter(lambda line: line.lstrip(b" \t\r")[:1] != b"{")
    .filter(lambda line: line.strip(b" \t\r") != b"")
)


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[bytes]]:
    """A payload of good records and junk lines in any order, with blank lines and
    CRLF endings sprinkled in; and its good and junk lines, in order."""
    count = draw(st.integers(1, 8))
    goods = [good_record(n) for n in range(count)]
    junk = draw(st.lists(junk_lines, min_size=1, max_size=8))
    order = draw(st.permutations([("good", g) for g in goods] + [("junk", j) for j in junk]))
    lines: list[bytes] = []
    for _, line in order:
        lines.append(line + draw(st.sampled_from([b"", b"\r"])))
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from([b"", b"  ", b"\r"])))
    kept_junk = [line for kind, line in order if kind == "junk"]
    return b"\n".join(lines), goods, kept_junk


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleavings())
def test_any_interleaving_of_good_records_and_junk_lines_keeps_every_good_record(
    case: tuple[bytes, list[bytes], list[bytes]],
) -> None:
    body, goods, junk = case
    result = parse_payload(body)
    expected = {f"0100018b-framing-{n:06d}-000000" for n in range(len(goods))}
    assert {event.message_id for event in result.events} == expected
    # One record a non-blank line: each junk line rejected on its own.
    assert result.records == len(goods) + len(junk)
    assert result.rejected_count == len(junk)
    assert result.scanned <= 6 * len(body) + 200_000
    for issue in result.rejected:
        # Located at the junk line itself, whichever way it was judged bad.
        assert issue.offset is not None
        line = body[issue.offset :].split(b"\n", 1)[0]
        assert line.strip(b" \t\r") in {j.strip(b" \t\r") for j in junk}
        assert issue.code in (Reason.INVALID_JSON, Reason.NOT_UTF8, Reason.NOT_OBJECT)
