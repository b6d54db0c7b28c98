import pytest

from service.timestamps import TimestampError, format_ms, parse_ms

INSTANT = 1_539_007_545_000  # 2018-10-08T14:05:45Z


@pytest.mark.parametrize(
    "text",
    [
        "2018-10-08T14:05:45Z",
        "2018-10-08T14:05:45.000Z",
        "2018-10-08T14:05:45 +0000",  # legacy notification form
        "2018-10-08T17:05:45+03:00",
        "2018-10-08T17:05:45.000+03:00",
        "2018-10-08T09:05:45-05:00",
        "2018-10-08T14:05:45+00:00",
        "2018-10-08T14:05:45",  # no zone: SES means UTC
    ],
)
def test_every_form_gives_the_same_instant(text: str) -> None:
    assert parse_ms(text) == INSTANT


def test_milliseconds_are_kept_exactly() -> None:
    assert parse_ms("2016-01-27T14:59:38.237Z") == 1_453_906_778_237
    assert parse_ms("2016-01-27T14:59:38.999999Z") == 1_453_906_778_999


def test_legacy_form_with_other_offset() -> None:
    assert parse_ms("2018-10-08T16:05:45 +0200") == INSTANT


@pytest.mark.parametrize(
    "value",
    ["", "yesterday", "2018-13-08T14:05:45Z", 1539007545, None, "1970-01-01T00:00:00Z", "x" * 100],
)
def test_rejects_what_is_not_an_ses_timestamp(value: object) -> None:
    with pytest.raises(TimestampError):
        parse_ms(value)


def test_format_is_iso_utc_with_millis_and_z() -> None:
    assert format_ms(1_453_906_778_237) == "2016-01-27T14:59:38.237Z"
    assert format_ms(INSTANT) == "2018-10-08T14:05:45.000Z"
