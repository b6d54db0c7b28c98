"""A local SNS-like signer: key, certificate and signed messages for tests."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from consumers.sns import canonical_string
from service.clock import wall_clock_ms
from service.timestamps import format_ms

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-local.pem"


class LocalSigner:
    def __init__(self, *, valid_days: int = 30, not_before_days: int = -1) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + timedelta(days=not_before_days))
            .not_valid_after(now + timedelta(days=valid_days))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    async def fetch(self, url: str) -> bytes:
        return self.pem

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        message = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(canonical_string(message), padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(signature).decode()
        return message


def now_stamp(offset_s: float = 0) -> str:
    """An SNS Timestamp: now (SNS delivers fresh messages), or ``offset_s`` from now."""
    return format_ms(wall_clock_ms() + int(offset_s * 1000))


def notification(
    body: str, message_id: str = "11111111-aaaa-bbbb-cccc-000000000001", timestamp: str = ""
) -> dict:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": body,
        "Timestamp": timestamp or now_stamp(),
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def subscription_confirmation() -> dict:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "22222222-aaaa-bbbb-cccc-000000000002",
        "Token": "2336412f37fb687f5d51e6e2425dacbba",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": "You have chosen to subscribe to the topic ...",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336",
        "Timestamp": now_stamp(),
    }
