"""Production connection settings turn into the clients' arguments."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.support.tls import make_certificates


def test_kafka_sasl_ssl_with_a_private_ca(tmp_path: Path) -> None:
    ca, _, _ = make_certificates(tmp_path)
    settings = Settings(
        _env_file=None,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="tracker",
        kafka_sasl_password="kafka-secret",
        kafka_ca_file=ca,
    )
    options = settings.kafka_security()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "tracker",
        "kafka-secret",
    )
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert "kafka-secret" in settings.secret_values()  # kept out of every log line


def test_plaintext_kafka_and_plain_redis_need_nothing_more() -> None:
    settings = Settings(_env_file=None)
    assert settings.kafka_security() == {"security_protocol": "PLAINTEXT"}
    assert settings.redis_options() == {}


def test_redis_private_ca(tmp_path: Path) -> None:
    ca, _, _ = make_certificates(tmp_path)
    settings = Settings(_env_file=None, redis_ca_file=ca)
    assert settings.redis_options() == {"ssl_ca_certs": str(ca)}


async def test_msk_iam_signs_one_token_and_renews_it_before_it_expires(monkeypatch) -> None:
    from consumers.msk import MskIamTokenProvider

    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    options = Settings(
        _env_file=None, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="AWS_MSK_IAM"
    ).kafka_security()
    assert options["sasl_mechanism"] == "OAUTHBEARER" and "ssl_context" in options
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider) and provider.region == "eu-west-1"

    now = [1_000_000]
    signed: list[str] = []

    def sign(region: str) -> tuple[str, int]:
        signed.append(region)
        return f"token-{len(signed)}", now[0] + 900_000  # MSK tokens last 15 minutes

    tokens = MskIamTokenProvider("eu-west-1", sign=sign, clock_ms=lambda: now[0])
    assert [await tokens.token() for _ in range(3)] == ["token-1"] * 3
    now[0] += 850_000  # within a minute of expiry: a fresh one
    assert await tokens.token() == "token-2" and signed == ["eu-west-1", "eu-west-1"]


def test_the_msk_signer_signs_with_the_processes_credentials(monkeypatch) -> None:
    """AWS's signer, for real: a SigV4-signed token from the credential chain (signed
    locally: nothing is sent)."""
    import base64

    from consumers.msk import _sign

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    token, expires_ms = _sign("us-east-1")
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    assert url.startswith("https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster")
    assert "X-Amz-Signature=" in url and "AKIDEXAMPLE" in url
    assert expires_ms > 0


def test_cluster_mode_needs_a_tcp_url_and_a_bounded_group_count() -> None:
    on = Settings(_env_file=None, redis_url="redis://node-1:6379/0", redis_cluster=True)
    assert on.redis_slot_group_count() == 16
    assert Settings(_env_file=None, redis_url="redis://r:6379/0").redis_slot_group_count() is None
    for bad in (
        {"redis_cluster": True},
        {"redis_cluster": True, "redis_url": "unix:///run/redis.sock"},
        {"redis_cluster": True, "redis_url": "redis://n:6379/0", "redis_slot_groups": 0},
        {"redis_cluster": True, "redis_url": "redis://n:6379/0", "redis_slot_groups": 1_025},
    ):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, **bad)
