"""Tokens, read-only tokens and signed session ids (service.access), and the
settings that configure them; signed-out ids in memory (service.sessions)."""

from __future__ import annotations

import base64
import hmac

import orjson
import pytest

from service.access import (
    SESSION_TTL_MS,
    Keyring,
    ReadToken,
    parse_read_tokens,
    token_problem,
)
from service.sessions import MemoryRevocations
from service.settings import SettingsError, load_settings

API = "api-token-0123456789abcdefXYZ"
SUPPORT = "support-token-0123456789abcdef"
BARE = "bare-read-token-0123456789abcdef"
NOW = 1_790_000_000_000


def keyring(api: str = API) -> Keyring:
    return Keyring(api, parse_read_tokens(f"support:{SUPPORT},{BARE}"))


def test_read_tokens_are_named_or_bare_and_listed_in_order() -> None:
    assert parse_read_tokens(f" support:{SUPPORT} , {BARE} ,") == [
        ReadToken("support", SUPPORT),
        ReadToken(None, BARE),
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("support:short-token", "entry 1 (support): the token is shorter than 24"),
        (f"{BARE},tiny", "entry 2: the token is shorter than 24"),
        ("support:change-me-to-a-long-random-string", "placeholder"),
        ("replace-with-a-long-random-token", "placeholder"),
        (f"a:{SUPPORT},a:{BARE}", "entry 2 (a): the name is used twice"),
        (f"a:{SUPPORT},b:{SUPPORT}", "entry 2 (b): the same token is listed twice"),
        (f"api:{SUPPORT}", "the service's own"),
        (f"token-1:{SUPPORT}", "the service's own"),
        (f"bad name:{SUPPORT}", "a name is 1-64 letters"),
        (f"support:{SUPPORT[:12]} {SUPPORT[12:]}", "whitespace"),
        (" , ", "no token listed"),
    ],
)
def test_a_bad_read_token_entry_is_named_without_its_token(value: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_read_tokens(value)
    assert problem in str(raised.value)
    for secret in (SUPPORT, BARE, "short-token", "change-me-to-a-long-random-string"):
        assert secret not in str(raised.value)


def test_a_token_of_24_characters_that_is_no_placeholder_passes() -> None:
    assert token_problem("k" * 23) is not None
    assert token_problem("k" * 24) is None
    assert token_problem("<your API token here, 24+>") is not None


def test_read_tokens_without_an_api_token_are_a_settings_error_naming_both() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, read_tokens=f"support:{SUPPORT}")
    [problem] = raised.value.problems
    assert problem.startswith("SES_TRACKER_READ_TOKENS: ")
    assert "SES_TRACKER_API_TOKEN" in problem
    assert SUPPORT not in problem


def test_a_short_read_token_is_a_settings_error_that_hides_it() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, api_token=API, read_tokens="support:tooshort")
    assert "SES_TRACKER_READ_TOKENS" in str(raised.value)
    assert "tooshort" not in str(raised.value)


def test_a_read_token_equal_to_the_api_token_is_refused() -> None:
    with pytest.raises(SettingsError, match="equals SES_TRACKER_API_TOKEN"):
        load_settings(_env_file=None, api_token=API, read_tokens=f"x:{API}")


def test_read_tokens_are_secrets_the_log_redactor_knows_and_repr_hides() -> None:
    settings = load_settings(_env_file=None, api_token=API, read_tokens=f"support:{SUPPORT},{BARE}")
    assert {API, SUPPORT, BARE} <= set(settings.secret_values())
    assert SUPPORT not in repr(settings) and BARE not in repr(settings)
    assert load_settings(_env_file=None, read_tokens="").read_tokens is None


def test_each_token_grants_its_scope_and_name_and_a_wrong_one_nothing() -> None:
    ring = keyring()
    api, support, bare = (ring.match(t) for t in (API, SUPPORT, BARE))
    assert api is not None and (api.scope, api.name) == ("write", "api")
    assert support is not None and (support.scope, support.name) == ("read", "support")
    assert bare is not None and bare.scope == "read"
    assert bare.name.startswith("token-") and len(bare.name) == 14
    assert BARE not in bare.name
    for wrong in ("", API[:-1], API + "x", SUPPORT.upper(), "x" * 1_000):
        assert ring.match(wrong) is None


def test_a_bare_tokens_name_is_stable_and_keyed_with_the_api_token() -> None:
    assert keyring().match(BARE).name == keyring().match(BARE).name  # type: ignore[union-attr]
    other = keyring("another-api-token-0123456789ab").match(BARE)
    assert other is not None and other.name != keyring().match(BARE).name  # type: ignore[union-attr]


def test_a_session_cookie_verifies_until_it_expires_after_12_hours() -> None:
    ring = keyring()
    grant = ring.match(SUPPORT)
    assert grant is not None
    claims, cookie = ring.open_session(grant, NOW)
    assert claims.expires_ms == NOW + SESSION_TTL_MS == NOW + 12 * 3_600_000
    assert SUPPORT not in cookie and API not in cookie
    assert ring.verify(cookie, NOW) == claims
    assert ring.verify(cookie, NOW + SESSION_TTL_MS - 1) == claims
    assert ring.verify(cookie, NOW + SESSION_TTL_MS) is None


def test_every_tampered_cookie_is_refused() -> None:
    ring = keyring()
    _, cookie = ring.open_session(ring.match(SUPPORT), NOW)  # type: ignore[arg-type]
    version, payload, signature = cookie.split(".")
    fields = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = dict(fields, scope="write", name="api")
    forged_payload = base64.urlsafe_b64encode(orjson.dumps(forged)).rstrip(b"=").decode()
    for bad in (
        f"{version}.{forged_payload}.{signature}",
        f"{version}.{payload}.{signature[:-2]}AA",
        f"v2.{payload}.{signature}",
        f"{version}.{payload}",
        "",
        "v1..",
        cookie + "x" * 600,
    ):
        assert ring.verify(bad, NOW) is None, bad


def test_rotating_the_api_token_revokes_every_session() -> None:
    ring = keyring()
    _, write_cookie = ring.open_session(ring.match(API), NOW)  # type: ignore[arg-type]
    _, read_cookie = ring.open_session(ring.match(SUPPORT), NOW)  # type: ignore[arg-type]
    rotated = keyring("rotated-api-token-0123456789ab")
    assert rotated.verify(write_cookie, NOW) is None
    assert rotated.verify(read_cookie, NOW) is None


def test_changing_or_removing_a_read_token_revokes_its_sessions_only() -> None:
    ring = keyring()
    _, support = ring.open_session(ring.match(SUPPORT), NOW)  # type: ignore[arg-type]
    _, api = ring.open_session(ring.match(API), NOW)  # type: ignore[arg-type]
    changed = Keyring(API, parse_read_tokens(f"support:{'n' * 30},{BARE}"))
    assert changed.verify(support, NOW) is None
    assert changed.verify(api, NOW) is not None
    assert Keyring(API).verify(support, NOW) is None


def test_an_open_service_accepts_no_session() -> None:
    ring = keyring()
    _, cookie = ring.open_session(ring.match(API), NOW)  # type: ignore[arg-type]
    assert Keyring(None).verify(cookie, NOW) is None


def test_matching_compares_with_every_token_whatever_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    ring = keyring()
    for presented in (API, SUPPORT, "wrong-token-0123456789abcdef"):
        compared.clear()
        ring.match(presented)
        assert len(compared) == 3  # no early exit on the first token


async def test_a_signed_out_id_stays_refused_until_its_expiry_then_is_forgotten() -> None:
    revocations = MemoryRevocations(max_ids=3)
    await revocations.revoke("a", until_ms=NOW + 10, now_ms=NOW)
    assert await revocations.revoked("a", NOW + 9)
    assert not await revocations.revoked("a", NOW + 10)
    assert not await revocations.revoked("b", NOW)
    for n in range(5):
        await revocations.revoke(f"id{n}", until_ms=NOW + 100 + n, now_ms=NOW + 20)
    assert len(revocations) == 3  # bounded: the soonest to expire go first
    assert await revocations.revoked("id4", NOW + 20)
