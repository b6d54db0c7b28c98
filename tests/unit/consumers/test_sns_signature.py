import asyncio

import pytest

from consumers.sns import (
    CLOCK_SKEW_S,
    SignatureError,
    SnsVerifier,
    canonical_string,
    check_freshness,
    is_sns_certificate_url,
    is_sns_url,
)
from service.clock import wall_clock_ms
from tests.support import ses
from tests.support.sns import LocalSigner, notification, now_stamp, subscription_confirmation


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
        ("https://sns.cn-north-1.amazonaws.com.cn/x.pem", True),
        # Exactly sns.<region>.amazonaws.com: no other SNS-looking host, no other path.
        ("https://sns-fips.us-gov-west-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com/x.pem?Action=x", False),
        ("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription", False),
        ("https://sns.us-east-1.amazonaws.com/x.pem#frag", False),
        ("https://sns.evil.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:443/x.pem", False),
        ("http://sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", False),
        ("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://user@sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
        ("https://s3.amazonaws.com/x.pem", False),
    ],
)
def test_certificate_urls_must_be_https_on_an_sns_host(url: str, allowed: bool) -> None:
    assert is_sns_certificate_url(url) is allowed


def test_subscribe_urls_need_an_sns_host_but_no_pem() -> None:
    assert is_sns_url("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=1")
    assert not is_sns_url("https://sns.us-east-1.amazonaws.com.evil.example/?Action=x")


def test_canonical_string_follows_the_message_type() -> None:
    message = notification("hello", timestamp="2023-11-14T22:13:21.000Z")
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
        (lambda m: m.update(SigningCertURL="https://evil.example/c.pem"), "sns.<region>"),
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


# --- freshness: a genuinely signed message is only good while SNS could send it ---


@pytest.mark.parametrize(
    ("offset_s", "fresh"),
    [
        (0, True),
        (-3_000, True),  # SNS still retrying
        (-3_899, True),
        (-3_901, False),  # past one hour plus the skew: a replay
        (-86_400 * 365, False),
        (CLOCK_SKEW_S - 5, True),  # a sender clock a little ahead
        (CLOCK_SKEW_S + 5, False),
    ],
)
def test_timestamps_must_be_fresh(offset_s: float, fresh: bool) -> None:
    message = notification("x", timestamp=now_stamp(offset_s))
    if fresh:
        check_freshness(message, wall_clock_ms(), 3_900)
    else:
        with pytest.raises(SignatureError, match="Timestamp"):
            check_freshness(message, wall_clock_ms(), 3_900)


@pytest.mark.parametrize("stamp", [None, 17, "yesterday", ""])
def test_timestamps_must_be_timestamps(stamp: object) -> None:
    with pytest.raises(SignatureError, match="Timestamp"):
        check_freshness({**notification("x"), "Timestamp": stamp}, wall_clock_ms(), 3_900)


# --- the certificate cache: bounded, one fetch in flight, failures remembered -------


async def test_concurrent_messages_share_one_fetch(signer: LocalSigner) -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def slow(url: str) -> bytes:
        calls.append(url)
        await release.wait()
        return signer.pem

    verifier = SnsVerifier(fetch=slow)
    waiting = [
        asyncio.create_task(verifier.verify(signer.sign(notification(f"m{n}")))) for n in range(20)
    ]
    await asyncio.sleep(0.05)
    release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*waiting)
    assert len(calls) == 1


async def test_a_failed_fetch_is_remembered_briefly(signer: LocalSigner) -> None:
    calls: list[str] = []
    now = [1_000.0]

    async def failing(url: str) -> bytes:
        calls.append(url)
        raise OSError("connection refused")

    verifier = SnsVerifier(fetch=failing, failure_ttl_s=60, clock=lambda: now[0])
    for _ in range(5):
        with pytest.raises(SignatureError, match="cannot load"):
            await verifier.verify(signer.sign(notification("x")))
    assert len(calls) == 1  # a flood naming a dead URL costs one fetch
    now[0] += 61
    with pytest.raises(SignatureError):
        await verifier.verify(signer.sign(notification("x")))
    assert len(calls) == 2


async def test_the_certificate_cache_is_bounded(signer: LocalSigner) -> None:
    urls = [f"https://sns.us-east-1.amazonaws.com/cert-{n}.pem" for n in range(50)]
    verifier = SnsVerifier(fetch=signer.fetch, cache_size=8)
    for url in urls:
        message = signer.sign(notification("x"))
        message["SigningCertURL"] = url  # not signed: any URL reaches the cache
        await verifier.verify(message)
    assert len(verifier._keys) == 8
