"""What counts as an email address (service.addresses), case by case."""

from __future__ import annotations

import pytest

from service.addresses import (
    MAX_ADDRESS_CHARS,
    MAX_LOCAL_CHARS,
    MAX_RAW_CHARS,
    normalize_address,
    read_address,
)

LONGEST_LOCAL = "l" * MAX_LOCAL_CHARS
# 64 + 1 + 189 = 254 characters: the longest address there is.
LONGEST = LONGEST_LOCAL + "@" + "d" * 60 + "." + "e" * 60 + "." + "f" * 63 + ".com"

ADDRESSES = {
    "plain": ("jane@example.com", "jane@example.com"),
    "case folded": ("Jane.Doe@Example.COM", "jane.doe@example.com"),
    "white space around": ("  jane@example.com\t", "jane@example.com"),
    "plus tag": ("jane+orders@example.com", "jane+orders@example.com"),
    "apostrophe and braces": ("o'brien{x}@example.com", "o'brien{x}@example.com"),
    "quoted local part holding an @": ('"a@b"@example.com', '"a@b"@example.com'),
    "quoted local part holding a space": ('"john doe"@example.com', '"john doe"@example.com'),
    "quoted local part with an escaped quote": ('"a\\"b"@example.com', '"a\\"b"@example.com'),
    "display name, quoted": ('"Jane Doe" <Jane@Example.com>', "jane@example.com"),
    "display name, bare": ("Jane Doe <jane@example.com>", "jane@example.com"),
    "display name holding <": ('"a<b" <jane@example.com>', "jane@example.com"),
    "angle brackets only": ("< jane@example.com >", "jane@example.com"),
    "address literal": ("jane@[192.0.2.1]", "jane@[192.0.2.1]"),
    "international domain": ("jane@exämple.com", "jane@exämple.com"),
    "international local part": ("Jöran@example.com", "jöran@example.com"),
    "local part of 64": (LONGEST_LOCAL + "@x.com", LONGEST_LOCAL + "@x.com"),
    "254 in all": (LONGEST, LONGEST),
}

NOT_ADDRESSES = {
    "two unquoted @": ("a@b@c", "more than one @"),
    "two unquoted @ beside a quoted one": ('"a@b"@c@d.com', "more than one @"),
    "no @": ("idx", "no @"),
    "empty local part": ("@example.com", "empty local part"),
    "no domain": ("jane@", "no domain"),
    "empty": ("", "empty"),
    "blank": ("   ", "empty"),
    "empty angle brackets": ("Jane <>", "empty"),
    "space in the local part": ("jane doe@example.com", "white space"),
    "space in the domain": ("jane@exa mple.com", "white space"),
    "newline inside": ("ja\nne@example.com", "white space or control"),
    "NUL at the end": ("jane@example.com\x00", "white space or control"),
    "zero-width space": ("ja\u200bne@example.com", "white space or control"),
    "control character in quotes": ('"ja\x07ne"@example.com', "control characters"),
    "unbalanced quotes": ('"jane@example.com', "unbalanced"),
    "quote inside an unquoted local part": ('ja"n"e@example.com', "not allowed unquoted"),
    "stray quote in a quoted local part": ('"a"b"@example.com', "unbalanced"),
    "colon and braces": ("a:{}@example.com", "not allowed unquoted"),
    "comma": ("a,b@example.com", "not allowed unquoted"),
    "angle bracket in the domain": ("jane@exa<mple.com", "not allowed unquoted"),
    "empty domain label": ("jane@example..com", "empty label"),
    "leading dot in the domain": ("jane@.example.com", "empty label"),
    "trailing dot in the domain": ("jane@example.com.", "empty label"),
    "empty address literal": ("jane@[]", "address literal"),
    "bad address in a display name": ("Jane <a@b@c>", "more than one @"),
    "local part of 65": ("l" * 65 + "@x.com", f"over {MAX_LOCAL_CHARS}"),
    "255 in all": ("l" + LONGEST, f"over {MAX_ADDRESS_CHARS}"),
    "absurdly long": ("a" * 10_000 + "@x.com", f"over {MAX_RAW_CHARS}"),
}


@pytest.mark.parametrize(("text", "stored"), ADDRESSES.values(), ids=ADDRESSES.keys())
def test_an_address_is_read_and_case_folded(text: str, stored: str) -> None:
    assert read_address(text) == (stored, "")


@pytest.mark.parametrize(("text", "why"), NOT_ADDRESSES.values(), ids=NOT_ADDRESSES.keys())
def test_what_is_not_an_address_says_why(text: str, why: str) -> None:
    address, reason = read_address(text)
    assert address is None
    assert why in reason


@pytest.mark.parametrize("value", [None, 5, 1.5, True, ["a@x.com"], {"a": "a@x.com"}])
def test_a_value_that_is_not_a_string_is_not_an_address(value: object) -> None:
    assert read_address(value) == (None, "expected an email address string")


def test_the_longest_address_is_exactly_at_the_bound() -> None:
    assert len(LONGEST) == MAX_ADDRESS_CHARS


def test_the_reason_never_quotes_the_input() -> None:
    """Reasons are answered and logged: a recipient's address must not leak there."""
    for text, _ in NOT_ADDRESSES.values():
        _, reason = read_address(text)
        assert text.strip() == "" or text not in reason


def test_a_search_finds_what_the_parser_stored() -> None:
    for text, stored in ADDRESSES.values():
        assert normalize_address(text) == stored
