"""All configuration, from ``SES_TRACKER_*`` environment variables (or ``.env``).

One class, read once at start-up; command-line flags override by passing values
to :class:`Settings` directly. Unset means the embedded default (README, Configuration).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SES_TRACKER_", env_file=".env", extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    redis_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    kafka_topics: str = "ses-events"
    kafka_group_id: str = "ses-tracker"
    sqs_queue_urls: str | None = None
    aws_endpoint_url: str | None = None
    api_token: SecretStr | None = None
    firehose_access_key: SecretStr | None = None
    max_future_s: int = Field(86_400, ge=0)
    overdue_after_s: float = Field(900, gt=0)
    retention_s: int = Field(1_209_600, gt=0)
    alert_webhooks: str | None = None
    alert_rules: Path | None = None

    # Beyond the published contract's table; all documented in README, Configuration.
    alert_webhook_secret: SecretStr | None = None
    alert_state_dir: Path | None = None
    public_url: str | None = None
    sns_topic_arns: str | None = None
    sns_max_age_s: float = Field(3_900, gt=0, le=7 * 86_400)
    allowed_origins: str | None = None
    rate_limit_per_s: float = Field(200.0, ge=0)
    rate_limit_burst: int = Field(1_000, ge=1)
    rate_limit_loopback: bool = False
    metrics_require_token: bool = False
    feed_window_s: float = Field(60.0, gt=0)
    live_queue_frames: int = Field(64, gt=0)
    live_send_timeout_s: float = Field(5.0, gt=0)
    kafka_max_records: int = Field(2_000, gt=0)
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000)
    sqs_pollers_per_queue: int = Field(2, gt=0, le=50)
    sqs_wait_time_s: int = Field(20, ge=0, le=20)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    memory_max_messages: int = Field(500_000, gt=0)
    memory_max_bytes: int = Field(1024**3, gt=0)
    cache_ttl_s: float = Field(1.0, ge=0)
    log_level: str = "info"

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor (``service.logs``)."""
        values = [
            secret.get_secret_value()
            for secret in (self.api_token, self.firehose_access_key, self.alert_webhook_secret)
            if secret is not None
        ]
        for entry in _split(self.alert_webhooks):
            url = entry.partition("=")[2].strip()
            values.append(url)
            # Slack, Discord and Google Chat put the credential in the path or query.
            parts = urlsplit(url)
            values += [p for p in (parts.path, parts.query) if len(p) > 8]
        if self.redis_url:
            password = urlsplit(self.redis_url).password
            if password:
                values.append(password)
        values += [
            os.environ[name]
            for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
            if os.environ.get(name)
        ]
        return values

    @property
    def topics(self) -> list[str]:
        return _split(self.kafka_topics)

    @property
    def queue_urls(self) -> list[str]:
        return _split(self.sqs_queue_urls)

    @property
    def allowed_topic_arns(self) -> frozenset[str]:
        """Topics the SNS endpoint accepts; empty: closed; ``*`` in it: any topic."""
        return frozenset(_split(self.sns_topic_arns))

    @property
    def origins(self) -> frozenset[str]:
        """Browser origins besides the service's own that may open ``/v1/live``."""
        return frozenset(origin.rstrip("/") for origin in _split(self.allowed_origins))


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]
