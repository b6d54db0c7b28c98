"""Who may do what: the API token, read-only tokens and signed session ids.

Pure: no I/O, no clock of its own (callers pass ``now_ms``). The request side is
``api.auth``; revoked session ids are kept by ``service.sessions``.

- The API token grants scope ``write`` (its holder is named ``api``).
- ``SES_TRACKER_READ_TOKENS`` grants scope ``read``: each entry ``name:token``, or a
  bare token, then named ``token-<8 hex>`` (a hash keyed with the API token, so the
  name says which token without revealing it).
- A session id is signed (HMAC-SHA256) with a key derived from the API token, so every
  worker and replica verifies it alike and rotating the API token revokes them all.
  It carries a fingerprint of the token that opened it, so changing or removing a read
  token revokes that token's sessions too. It never holds a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

Scope = Literal["write", "read"]

MIN_TOKEN_CHARS = 24
SESSION_TTL_MS = 12 * 3_600 * 1_000
API_NAME = "api"
BARE_NAME_PREFIX = "token-"
# Names end up in logs, audit entries and the page: plain words only.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What example files and docs put where a secret goes (deploy/*.example ship two).
_PLACEHOLDER_MARKS = (
    "change-me",
    "changeme",
    "change_me",
    "replace-with",
    "replace-me",
    "replace_me",
    "your-token",
    "your_token",
    "placeholder",
    "example",
    "<",
    ">",
)
_SESSION_VERSION = "v1"
# Bounds on what a cookie may be before any work is spent on it.
MAX_COOKIE_CHARS = 512


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot guard anything (None: it can). Never repeats the token."""
    if len(token) < MIN_TOKEN_CHARS:
        return f"is shorter than {MIN_TOKEN_CHARS} characters"
    if any(char.isspace() or not char.isprintable() for char in token):
        return "holds whitespace or control characters"
    lowered = token.lower()
    if any(mark in lowered for mark in _PLACEHOLDER_MARKS):
        return "is a placeholder from an example, not a secret"
    return None


@dataclass(frozen=True, slots=True)
class ReadToken:
    """One entry of SES_TRACKER_READ_TOKENS; ``name`` None for a bare token."""

    name: str | None
    token: str


def parse_read_tokens(value: str) -> list[ReadToken]:
    """``name:token`` or bare tokens, comma-separated; ValueError names the entry by
    its position (and name), never its token."""
    entries: list[ReadToken] = []
    names: set[str] = set()
    tokens: set[str] = set()
    for position, raw in enumerate(value.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        name: str | None = None
        token = entry
        if ":" in entry:
            name, _, token = entry.partition(":")
            if not NAME.match(name):
                raise ValueError(
                    f"entry {position}: a name is 1-64 letters, digits, '.', '_' or '-' "
                    "before ':' (a bare token may not hold ':')"
                )
            if name == API_NAME or name.startswith(BARE_NAME_PREFIX):
                raise ValueError(
                    f"entry {position} ({name}): '{API_NAME}' and names starting "
                    f"'{BARE_NAME_PREFIX}' are the service's own"
                )
            if name in names:
                raise ValueError(f"entry {position} ({name}): the name is used twice")
            names.add(name)
        label = f"entry {position}" + (f" ({name})" if name else "")
        problem = token_problem(token)
        if problem is not None:
            raise ValueError(f"{label}: the token {problem}")
        if token in tokens:
            raise ValueError(f"{label}: the same token is listed twice")
        tokens.add(token)
        entries.append(ReadToken(name, token))
    if not entries:
        raise ValueError("no token listed")
    return entries


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token allows, and the fingerprint its sessions carry."""

    scope: Scope
    name: str
    token: bytes
    fingerprint: str


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a session cookie says; ``id`` is random, the rest is bound by the MAC."""

    id: str
    expires_ms: int
    scope: Scope
    name: str
    fingerprint: str


def _derive(api_token: str, purpose: str) -> bytes:
    return hmac.new(api_token.encode(), purpose.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Keyring:
    """Every token the service accepts, and the key sessions are signed with.

    ``open``: no API token is set, so everything is allowed (the default).
    """

    def __init__(self, api_token: str | None, read_tokens: Sequence[ReadToken] = ()) -> None:
        self.open = api_token is None
        secret = api_token or ""
        self._session_key = _derive(secret, "ses-tracker session v1")
        name_key = _derive(secret, "ses-tracker token name v1")
        grants = [self._grant("write", API_NAME, secret)] if api_token is not None else []
        for entry in read_tokens:
            name = entry.name
            if name is None:
                digest = hmac.new(name_key, entry.token.encode(), hashlib.sha256).hexdigest()
                name = BARE_NAME_PREFIX + digest[:8]
            grants.append(self._grant("read", name, entry.token))
        self.grants: tuple[Grant, ...] = tuple(grants)

    def _grant(self, scope: Scope, name: str, token: str) -> Grant:
        fingerprint = hmac.new(self._session_key, b"grant\0" + token.encode(), hashlib.sha256)
        return Grant(scope, name, token.encode(), fingerprint.hexdigest()[:16])

    def match(self, presented: str) -> Grant | None:
        """The grant of ``presented``, comparing it with every token in constant time
        and without stopping at a match, so timing tells neither which nor whether."""
        candidate = presented.strip().encode()
        found: Grant | None = None
        for grant in self.grants:
            if hmac.compare_digest(candidate, grant.token):
                found = grant
        return found

    def open_session(self, grant: Grant, now_ms: int) -> tuple[SessionClaims, str]:
        """A new session for ``grant``: its claims and the cookie value (signed)."""
        claims = SessionClaims(
            id=secrets.token_urlsafe(16),
            expires_ms=now_ms + SESSION_TTL_MS,
            scope=grant.scope,
            name=grant.name,
            fingerprint=grant.fingerprint,
        )
        payload = _b64(
            orjson.dumps(
                {
                    "id": claims.id,
                    "exp": claims.expires_ms,
                    "scope": claims.scope,
                    "name": claims.name,
                    "fp": claims.fingerprint,
                }
            )
        )
        return claims, f"{_SESSION_VERSION}.{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        message = f"{_SESSION_VERSION}.{payload}".encode()
        return _b64(hmac.new(self._session_key, message, hashlib.sha256).digest())

    def verify(self, cookie: str, now_ms: int) -> SessionClaims | None:
        """The claims of a cookie this service signed, unexpired, whose token is still
        configured as it was; None otherwise (revocation is the caller's check)."""
        if self.open or len(cookie) > MAX_COOKIE_CHARS:
            return None
        version, _, rest = cookie.partition(".")
        payload, _, signature = rest.partition(".")
        if version != _SESSION_VERSION or not payload or not signature:
            return None
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            fields = orjson.loads(_unb64(payload))
            claims = SessionClaims(
                id=str(fields["id"]),
                expires_ms=int(fields["exp"]),
                scope="write" if fields["scope"] == "write" else "read",
                name=str(fields["name"]),
                fingerprint=str(fields["fp"]),
            )
        except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None  # signed by us yet unreadable: only a future format could be
        if claims.expires_ms <= now_ms:
            return None
        current = [
            grant
            for grant in self.grants
            if grant.scope == claims.scope and grant.name == claims.name
        ]
        if not current or not hmac.compare_digest(
            current[0].fingerprint.encode(), claims.fingerprint.encode()
        ):
            return None
        return claims
