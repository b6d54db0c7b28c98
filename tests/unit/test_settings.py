"""Production connection settings turn into the clients' arguments."""

from __future__ import annotations

import ssl
from pathlib import Path

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
