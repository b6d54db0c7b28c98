import pytest

from consumers.sns import SignatureError, SnsVerifier, canonical_string, is_sns_url
from tests.support import ses
from tests.support.sns import LocalSigner, notification, subscription_confirmation


@pytest.fixture(scope="module")
def signer() -> LocalSigner:
    return LocalSigner()


def verifier_for(signer: LocalSigner) -> SnsVerifier:
    return SnsVerifier(fetch=signer.fetch)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/x.pem", True),
        ("https://sns-fips.us-gov-west-1.amazonaws.com/x.pem", True),
        ("http://sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", False),
        ("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://user@sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
        ("https://s3.amazonaws.com/x.pem", False),
    ],
)
def test_certificate_urls_must_be_https_on_an_sns_host(url: str, allowed: bool) -> None:
    assert is_sns_url(url) is allowed


def test_canonical_string_follows_the_message_type() -> None:
    message = notification("hello")
    assert canonical_string(message) == (
        b"Message\nhello\nMessageId\n11111111-aaaa-bbbb-cccc-000000000001\n"
        b"Timestamp\n2023-11-14T22:13:21.000Z\n"
        b"TopicArn\narn:aws:sns:us-east-1:123456789012:ses-events\nType\nNotification\n"
    )
    with_subject = canonical_string({**message, "Subject": "Amazon SES Email Event"})
    assert b"Subject\nAmazon SES Email Event\n" in with_subject
    confirmation = canonical_string(subscription_confirmation())
    assert b"SubscribeURL\n" in confirmation and b"Token\n" in confirmation


@pytest.mark.parametrize("version", ["1", "2"])
async def test_valid_signatures_verify(signer: LocalSigner, version: str) -> None:
    message = signer.sign(notification(ses.dumps(ses.send("m", ["a@x.com"])).decode()), version)
    await verifier_for(signer).verify(message)
    await verifier_for(signer).verify(signer.sign(subscription_confirmation(), version))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda m: m.update(Message=m["Message"].replace("a@x.com", "b@x.com")), "does not match"),
        (lambda m: m.update(TopicArn="arn:aws:sns:us-east-1:999999999999:other"), "does not match"),
        (lambda m: m.update(Subject="added later"), "does not match"),
        (lambda m: m.update(SignatureVersion="3"), "SignatureVersion"),
        (lambda m: m.update(Signature="%%%"), "base64"),
        (lambda m: m.pop("Signature"), "Signature missing"),
        (lambda m: m.update(SigningCertURL="https://evil.example/cert.pem"), "SNS host"),
        (lambda m: m.pop("MessageId"), "MessageId missing"),
        (lambda m: m.update(Type="Surprise"), "unknown SNS message Type"),
    ],
)
async def test_forgeries_are_rejected(signer: LocalSigner, tamper, reason: str) -> None:
    message = signer.sign(notification(ses.dumps(ses.send("m", ["a@x.com"])).decode()))
    tamper(message)
    with pytest.raises(SignatureError, match=reason):
        await verifier_for(signer).verify(message)


async def test_a_message_signed_by_another_key_is_rejected(signer: LocalSigner) -> None:
    impostor = LocalSigner()
    message = impostor.sign(notification("hello"))
    with pytest.raises(SignatureError, match="does not match"):
        await verifier_for(signer).verify(message)


async def test_expired_or_unreadable_certificates_are_rejected() -> None:
    expired = LocalSigner(valid_days=-1, not_before_days=-30)
    with pytest.raises(SignatureError, match="not valid now"):
        await verifier_for(expired).verify(expired.sign(notification("x")))

    async def garbage(url: str) -> bytes:
        return b"not a certificate"

    signer = LocalSigner()
    with pytest.raises(SignatureError, match="cannot load"):
        await SnsVerifier(fetch=garbage).verify(signer.sign(notification("x")))


async def test_certificates_are_fetched_once_per_url(signer: LocalSigner) -> None:
    calls = []

    async def counting(url: str) -> bytes:
        calls.append(url)
        return signer.pem

    verifier = SnsVerifier(fetch=counting)
    for n in range(3):
        await verifier.verify(signer.sign(notification(f"m{n}")))
    assert len(calls) == 1


def test_subscribe_url_is_checked_like_a_certificate_url(signer: LocalSigner) -> None:
    verifier = verifier_for(signer)
    assert verifier.subscribe_url(subscription_confirmation()).startswith("https://sns.")
    with pytest.raises(SignatureError):
        verifier.subscribe_url(
            {**subscription_confirmation(), "SubscribeURL": "http://169.254.169.254/"}
        )
