"""merge.lua reads what Python sends by name, from one definition (layout.py)."""

from __future__ import annotations

import re
from importlib import resources

from service import state
from service.stores.redis import layout

SCRIPT = resources.files("service.stores.redis").joinpath("merge.lua").read_text()
CODE = "\n".join(line.split("--", 1)[0] for line in SCRIPT.splitlines())  # no comments
PRELUDE = dict(re.findall(r"^local (\w+) = (-?\d+|'[^']*')$", layout.lua_prelude(), re.MULTILINE))


def test_the_prelude_names_every_position_once() -> None:
    assert PRELUDE["EVENT_AT"] == str(state.EventWrite._fields.index("at") + 1)
    assert PRELUDE["MESSAGE_PROVIDERS"] == str(state.MessageWrite._fields.index("providers") + 1)
    assert PRELUDE["MESSAGE_TRUNCATED"] == str(len(state.MessageWrite._fields))
    assert PRELUDE["STATUS_DELAYED"] == str(state.DELAYED)
    assert PRELUDE["PROBLEM_FIRST"] == str(state.BOUNCED)
    lines = [line for line in layout.lua_prelude().splitlines() if line.startswith("local ")]
    assert len(lines) == len(PRELUDE)  # no name defined twice


def test_the_script_indexes_what_crosses_the_boundary_only_by_name() -> None:
    arrays = r"\b(event|message|record|stats|index|feed|entry|batch\[m\]|pair|ARGV)\["
    bare = re.findall(arrays + r"\s*-?\d", CODE)
    assert bare == [], bare
    # No status code written as a number in a comparison either.
    assert re.findall(r"(?:status|code|top)\w*\s*(?:[<>=~]=?|==)\s*-?\d", CODE) == []


def test_every_constant_the_script_uses_comes_from_the_prelude() -> None:
    used = set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b", CODE)) - {"KEYS", "ARGV"}
    assert used and used <= PRELUDE.keys(), used - PRELUDE.keys()


def test_the_script_writes_no_string_of_the_data_but_by_name() -> None:
    """Stream fields, reasons, providers and answers come from layout.STRINGS: only
    Redis's own words (commands, options), Lua's type names and error texts are
    written in the script."""
    literals = re.findall(r"'([^']*)'", CODE)
    ours = [
        text
        for text in literals
        # Redis's and Lua's own words; an address's domain pattern; a hash tag.
        if text and not text.isupper() and text not in {"~", "*", "table", "@([^@]*)$", "{", "}"}
        and not text.startswith("merge.lua: ")
    ]  # fmt: skip
    assert ours == [], ours


def test_the_script_builds_key_names_only_from_the_key_families() -> None:
    # A stem written as a literal would drift from service.stores.redis.keys, where the
    # families are kept apart (tests/property/test_key_families.py).
    named_by_literal = re.findall(r"prefix\]?\s*\.\.\s*'[^']*'", CODE, re.IGNORECASE)
    assert named_by_literal == [], named_by_literal
    assert "sup:idx" not in CODE and "'x:" not in CODE and "'r:" not in CODE
    for family in layout.LUA_KEY_FAMILIES:
        assert f"KEY_{family.upper()}" in PRELUDE


def test_the_script_finds_the_keys_after_the_records_by_name() -> None:
    # layout.OPTIONAL_KEYS is the one definition of their order: no key is found by
    # counting from the batch (KEYS[#batch + ...]) or by a running index.
    assert re.findall(r"KEYS\[#batch", CODE) == []
    assert "KEYS[next_key]" in CODE  # only in the one loop that names them
    assert CODE.count("KEYS[next_key]") == 1
    for part in layout.OPTIONAL_KEYS:
        assert f"key_of[OPTIONAL_KEY_{part.upper()}]" in CODE
    assert set(layout.OPTIONAL_KEYS) <= set(layout.ARG)


def test_the_projection_script_reads_its_plan_only_by_name() -> None:
    project = resources.files("service.stores.redis").joinpath("project.lua").read_text()
    code = "\n".join(line.split("--", 1)[0] for line in project.splitlines())
    assert re.findall(r"\b(t|plan|entry)\[\s*-?\d", code) == []
    used = set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b", code)) - {"KEYS", "ARGV"}
    assert used <= PRELUDE.keys(), used - PRELUDE.keys()


def test_the_script_is_sent_each_write_cut_to_what_it_reads() -> None:
    from service.codec import encode_batch
    from service.dimensions import Dimensions
    from tests.support import ses
    from tests.support.fold import SEEN_MS, events_of

    [write] = encode_batch(
        list(
            events_of(
                [
                    ses.send("slim", ["a@gmail.com"]),
                    ses.delivery("slim", ["a@gmail.com"], ses.SENT_AT + 900),
                ]
            )
        ),
        SEEN_MS,
        Dimensions(),
    )
    slim = layout.slim(write, providers=False)
    assert len(slim) == len(layout.MESSAGE)
    events = slim[layout.MESSAGE.index("events")]
    assert [list(event) for event in events] == [list(e[: len(layout.EVENT)]) for e in write.events]
    assert slim[layout.MESSAGE.index("groups")] == ()
    assert slim[layout.MESSAGE.index("providers")] == {}
    assert layout.slim(write, providers=True)[layout.MESSAGE.index("providers")] == write.providers
    assert slim[layout.MESSAGE.index("message_id")] == write.message_id
