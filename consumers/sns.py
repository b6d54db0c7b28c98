"""Amazon SNS HTTP(S) subscriptions: signature verification and confirmation.

SNS signs every message it POSTs: SignatureVersion 1 is RSA with SHA1, 2 is RSA with
SHA256, over a canonical string of the message's fields (which fields depends on
the message type). The signing certificate is fetched from ``SigningCertURL``,
which must be an https URL on an ``sns.<region>.amazonaws.com`` host; anything else
is a forgery, as is a bad signature or an expired certificate. No maintained library
does this, so it is here, small and tested.

A valid signature proves the message came from SNS, not that it came from *your*
topic: restrict topics with ``SES_TRACKER_SNS_TOPIC_ARNS``.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
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

log = structlog.get_logger(__name__)

_SNS_HOST = re.compile(r"^sns(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
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

CertificateFetcher = Callable[[str], Awaitable[bytes]]


class SignatureError(ValueError):
    """The message is not provably from SNS; the text says why."""


def is_sns_url(url: str) -> bool:
    """https on an SNS host, nothing else (no userinfo, no other port)."""
    parts = urlsplit(url)
    return (
        parts.scheme == "https"
        and parts.hostname is not None
        and _SNS_HOST.match(parts.hostname) is not None
        and parts.port in (None, 443)
        and "@" not in parts.netloc
    )


def canonical_string(message: dict[str, Any]) -> bytes:
    """The bytes SNS signed for this message."""
    kind = message.get("Type")
    fields = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise SignatureError(f"unknown SNS message Type {kind!r}")
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
        url_allowed: Callable[[str], bool] = is_sns_url,
        cache_ttl_s: float = 3_600,
    ) -> None:
        self._fetch = fetch
        self._url_allowed = url_allowed
        self._cache_ttl_s = cache_ttl_s
        self._keys: dict[str, tuple[float, rsa.RSAPublicKey]] = {}

    async def verify(self, message: dict[str, Any]) -> None:
        version = message.get("SignatureVersion")
        algorithm = _HASHES.get(version) if isinstance(version, str) else None
        if algorithm is None:
            raise SignatureError(f"unsupported SignatureVersion {version!r}")
        signed = canonical_string(message)
        raw_signature = message.get("Signature")
        if not isinstance(raw_signature, str):
            raise SignatureError("Signature missing")
        try:
            signature = base64.b64decode(raw_signature, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("Signature is not base64") from None
        url = message.get("SigningCertURL") or message.get("SigningCertUrl")
        if not isinstance(url, str) or not self._url_allowed(url):
            raise SignatureError("SigningCertURL is not an https URL on an SNS host")
        key = await self._public_key(url)
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SignatureError("signature does not match") from None

    def subscribe_url(self, message: dict[str, Any]) -> str:
        """The URL that confirms a subscription, checked like a certificate URL."""
        url = message.get("SubscribeURL")
        if not isinstance(url, str) or not self._url_allowed(url):
            raise SignatureError("SubscribeURL is not an https URL on an SNS host")
        return url

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._keys.get(url)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            pem = await self._fetch(url)
            certificate = x509.load_pem_x509_certificate(pem)
        except SignatureError:
            raise
        except (httpx.HTTPError, ValueError) as exc:
            raise SignatureError(
                f"cannot load the signing certificate: {type(exc).__name__}"
            ) from None
        moment = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise SignatureError("signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("signing certificate does not hold an RSA key")
        self._keys[url] = (now + self._cache_ttl_s, key)
        return key
