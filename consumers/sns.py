"""Amazon SNS HTTP(S) subscriptions: signature verification and confirmation.

SNS signs every message it POSTs: SignatureVersion 1 is RSA with SHA1, 2 is RSA with
SHA256, over a canonical string of the message's fields (which fields depends on
the message type). The signing certificate is fetched from ``SigningCertURL``,
which must be an https URL on exactly ``sns.<region>.amazonaws.com`` (or
``.amazonaws.com.cn``) whose path ends in ``.pem``; anything else is a forgery, as
is a bad signature or an expired certificate. No maintained library does this, so
it is here, small and tested.

Only the signed fields mean anything: the endpoint ingests the signed ``Message``
and nothing else of the body. A valid signature proves the message came from SNS,
not that it came from *your* topic (``SES_TRACKER_SNS_TOPIC_ARNS``), nor that it is
new: :func:`check_freshness` refuses old and future ``Timestamp`` values, and the
endpoint remembers MessageIds for as long, so a captured message cannot be replayed.

Certificates are cached (bounded, one fetch in flight per URL, failures remembered
briefly), so a flood of forged messages naming one URL costs one fetch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from service.timestamps import TimestampError, parse_ms

log = structlog.get_logger(__name__)

_SNS_HOST = re.compile(r"^sns\.[a-z]{2}(-[a-z]+)+-[0-9]+\.amazonaws\.com(\.cn)?$")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": _CONFIRMATION_FIELDS,
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERTIFICATE_BYTES = 16 * 1024
CERTIFICATE_CACHE_SIZE = 32
CERTIFICATE_FAILURE_TTL_S = 60.0
# SNS gives up retrying an HTTP/S delivery after 3,600 s in all; clocks may differ.
CLOCK_SKEW_S = 300
DEFAULT_MAX_AGE_S = 3_600 + CLOCK_SKEW_S

CertificateFetcher = Callable[[str], Awaitable[bytes]]


class SignatureError(ValueError):
    """The message is not provably from SNS; the text says why."""


def is_sns_url(url: str) -> bool:
    """https on an SNS host, nothing else (no userinfo, no other port, no fragment)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.hostname is not None
        and _SNS_HOST.match(parts.hostname) is not None
        and parts.netloc == parts.hostname
        and port is None
        and not parts.fragment
    )


def is_sns_certificate_url(url: str) -> bool:
    """An SNS host (as :func:`is_sns_url`), a path ending in ``.pem``, no query."""
    if not is_sns_url(url):
        return False
    parts = urlsplit(url)
    return parts.path.endswith(".pem") and not parts.query


def check_freshness(message: dict[str, Any], now_ms: int, max_age_s: float) -> None:
    """Refuse a message SNS could not be delivering now: too old, or from the future."""
    stamp = message.get("Timestamp")
    if not isinstance(stamp, str):
        raise SignatureError("Timestamp missing")
    try:
        sent_ms = parse_ms(stamp)
    except TimestampError:
        raise SignatureError("Timestamp is not a timestamp") from None
    if sent_ms < now_ms - max_age_s * 1000:
        raise SignatureError(
            "Timestamp is older than SES_TRACKER_SNS_MAX_AGE_S allows (a replay, or a "
            "delivery SNS stopped retrying)"
        )
    if sent_ms > now_ms + CLOCK_SKEW_S * 1000:
        raise SignatureError("Timestamp is in the future")


def canonical_string(message: dict[str, Any]) -> bytes:
    """The bytes SNS signed for this message."""
    kind = message.get("Type")
    fields = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise SignatureError("unknown SNS message Type")
    lines: list[str] = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":  # signed only when present
                continue
            raise SignatureError(f"{name} missing")
        if not isinstance(value, str):
            raise SignatureError(f"{name} must be a string")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


async def fetch_over_https(url: str) -> bytes:
    async with (
        httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client,
        client.stream("GET", url) as response,
    ):
        response.raise_for_status()
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_CERTIFICATE_BYTES:
                raise SignatureError("signing certificate too large")
        return body


async def confirm_over_https(subscribe_url: str) -> None:
    """Visit SubscribeURL, which is how SNS learns the endpoint agreed."""
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        response = await client.get(subscribe_url)
        response.raise_for_status()


class SnsVerifier:
    """Verifies SNS messages; certificates are fetched once per URL and cached.

    ``fetch`` and ``url_allowed`` are injectable so tests can serve certificates
    from a local server; in production they are https-only and SNS hosts only.
    """

    def __init__(
        self,
        *,
        fetch: CertificateFetcher = fetch_over_https,
        url_allowed: Callable[[str], bool] = is_sns_certificate_url,
        subscribe_url_allowed: Callable[[str], bool] = is_sns_url,
        cache_ttl_s: float = 3_600,
        cache_size: int = CERTIFICATE_CACHE_SIZE,
        failure_ttl_s: float = CERTIFICATE_FAILURE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._url_allowed = url_allowed
        self._subscribe_url_allowed = subscribe_url_allowed
        self._cache_ttl_s = cache_ttl_s
        self._cache_size = cache_size
        self._failure_ttl_s = failure_ttl_s
        self._clock = clock
        self._keys: OrderedDict[str, tuple[float, rsa.RSAPublicKey]] = OrderedDict()
        self._failures: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[rsa.RSAPublicKey]] = {}
        self.fetches = 0

    async def verify(self, message: dict[str, Any]) -> None:
        version = message.get("SignatureVersion")
        algorithm = _HASHES.get(version) if isinstance(version, str) else None
        if algorithm is None:
            raise SignatureError("unsupported SignatureVersion")
        signed = canonical_string(message)
        raw_signature = message.get("Signature")
        if not isinstance(raw_signature, str) or len(raw_signature) > 2_048:
            raise SignatureError("Signature missing")
        try:
            signature = base64.b64decode(raw_signature, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("Signature is not base64") from None
        url = message.get("SigningCertURL") or message.get("SigningCertUrl")
        if not isinstance(url, str) or not self._url_allowed(url):
            raise SignatureError(
                "SigningCertURL is not an https .pem URL on sns.<region>.amazonaws.com"
            )
        key = await self._public_key(url)
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SignatureError("signature does not match") from None

    def subscribe_url(self, message: dict[str, Any]) -> str:
        """The URL that confirms a subscription, checked like a certificate URL."""
        url = message.get("SubscribeURL")
        if not isinstance(url, str) or not self._subscribe_url_allowed(url):
            raise SignatureError("SubscribeURL is not an https URL on an SNS host")
        return url

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        now = self._clock()
        cached = self._keys.get(url)
        if cached is not None and cached[0] > now:
            self._keys.move_to_end(url)
            return cached[1]
        failed = self._failures.get(url)
        if failed is not None and failed[0] > now:
            raise SignatureError(failed[1])
        pending = self._in_flight.get(url)
        if pending is None:
            pending = asyncio.ensure_future(self._load(url))
            self._in_flight[url] = pending
            pending.add_done_callback(lambda _: self._in_flight.pop(url, None))
        # Shielded: one caller giving up (its request cancelled) must not cancel
        # the fetch the others wait on.
        return await asyncio.shield(pending)

    async def _load(self, url: str) -> rsa.RSAPublicKey:
        self.fetches += 1
        try:
            key = await self._fetch_key(url)
        except SignatureError as exc:
            self._failures[url] = (self._clock() + self._failure_ttl_s, str(exc))
            _trim(self._failures, self._cache_size)
            raise
        self._failures.pop(url, None)
        self._keys[url] = (self._clock() + self._cache_ttl_s, key)
        _trim(self._keys, self._cache_size)
        return key

    async def _fetch_key(self, url: str) -> rsa.RSAPublicKey:
        try:
            pem = await self._fetch(url)
            certificate = x509.load_pem_x509_certificate(pem)
        except SignatureError:
            raise
        except (httpx.HTTPError, ValueError, OSError) as exc:
            raise SignatureError(
                f"cannot load the signing certificate: {type(exc).__name__}"
            ) from None
        moment = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise SignatureError("signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("signing certificate does not hold an RSA key")
        return key


def _trim(cache: OrderedDict[str, Any], size: int) -> None:
    while len(cache) > size:
        cache.popitem(last=False)
