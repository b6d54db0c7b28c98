"""All configuration, from ``SES_TRACKER_*`` environment variables (or ``.env``).

One class, read once at start-up; command-line flags override by passing values
to :class:`Settings` directly. Unset means the embedded default (README, Configuration).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.access import ReadToken, parse_read_tokens, token_problem
from service.alerts.accounts import AccountPolicy, parse_account_ids
from service.cpus import usable_cpus
from service.dimensions import Dimensions, parse_tag_names
from service.stores.redis.slots import DEFAULT_SLOT_GROUPS, MAX_SLOT_GROUPS

PREFIX = "SES_TRACKER_"
# Kubernetes injects <SERVICE>_SERVICE_HOST, <SERVICE>_PORT=tcp://... and
# <SERVICE>_PORT_<n>_TCP... for a Service named ses-tracker ("service links"); the
# deployment turns them off (enableServiceLinks: false), and they are tolerated here.
_SERVICE_LINK = ("SERVICE_HOST", "SERVICE_PORT", "PORT_")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SES_TRACKER_", env_file=".env", extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # /metrics, /healthz, /readyz (whole) and POST /-/reload, on HOST's address
    # (api.admin); 0: none. Unchecked Host, no token: the port is the protection.
    admin_port: int = Field(9000, ge=0, le=65535)
    redis_url: str | None = Field(None, pattern=r"^(redis|rediss|unix)://.+")
    redis_cluster: bool = False
    kafka_bootstrap_servers: str | None = None
    kafka_topics: str = "ses-events"
    kafka_group_id: str = "ses-tracker"
    sqs_queue_urls: str | None = None
    aws_endpoint_url: str | None = None
    api_token: SecretStr | None = None
    # Read-only tokens, `name:token` or bare, comma-separated (service.access).
    read_tokens: SecretStr | None = None
    firehose_access_key: SecretStr | None = None
    max_future_s: int = Field(86_400, ge=0)
    overdue_after_s: float = Field(900, gt=0)
    retention_s: int = Field(1_209_600, gt=0)
    alert_webhooks: str | None = None
    alert_rules: Path | None = None
    tag_dimensions: str | None = None
    history_days: int = Field(400, ge=0, le=3_660)
    history_hourly_days: int = Field(31, ge=0, le=3_660)
    resolve_mx: bool = False
    mx_nameservers: str | None = None
    forward_file: Path | None = None
    forward_keep_s: float = Field(86_400, gt=0, le=30 * 86_400)
    forward_allow_private: bool = False
    suppression_days: int = Field(400, ge=0, le=3_660)
    # AWS accounts whose account-level events count (service.alerts.accounts).
    account_ids: str | None = None

    # Beyond the published contract's table; all documented in README, Configuration.
    redis_slot_groups: int = Field(DEFAULT_SLOT_GROUPS, ge=1, le=MAX_SLOT_GROUPS)
    alert_webhook_secret: SecretStr | None = None
    alert_state_dir: Path | None = None
    public_url: str | None = None
    sns_topic_arns: str | None = None
    sns_max_age_s: float = Field(3_900, gt=0, le=7 * 86_400)
    catch_up_lag_s: float = Field(900, gt=0)
    workers: str = Field("1", pattern=r"^(auto|[1-9][0-9]{0,2})$")
    allowed_origins: str | None = None
    # Host names answered besides loopback names and the public URL's (api.hosts).
    allowed_hosts: str | None = None
    # uvicorn's own variable (no prefix): peers whose X-Forwarded-For/-Proto count.
    # The app applies uvicorn's ProxyHeadersMiddleware itself, after noting the TCP
    # peer, so the rate limiter can tell a proxied client from a local one.
    forwarded_allow_ips: str = Field(
        "127.0.0.1", validation_alias=AliasChoices("forwarded_allow_ips", "FORWARDED_ALLOW_IPS")
    )
    rate_limit_per_s: float = Field(200.0, ge=0)
    rate_limit_burst: int = Field(1_000, ge=1)
    rate_limit_loopback: bool = False
    # Deprecated: /metrics left the public port for the admin port. Accepted and
    # ignored, with a warning, for one release.
    metrics_require_token: bool = False
    # How often each process re-reads ALERT_RULES and FORWARD_FILE for a changed
    # content (service.reload); 0: only on POST /-/reload.
    config_poll_s: float = Field(10.0, ge=0)
    feed_window_s: float = Field(60.0, gt=0)
    live_queue_frames: int = Field(64, gt=0)
    live_send_timeout_s: float = Field(5.0, gt=0)
    # Production connections: TLS with a private CA, Redis ACL users (in the URL:
    # rediss://user:password@host), Kafka SASL.
    redis_ca_file: Path | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM"] | None
    ) = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ca_file: Path | None = None
    kafka_max_records: int = Field(2_000, gt=0)
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000)
    sqs_pollers_per_queue: int = Field(2, gt=0, le=50)
    sqs_wait_time_s: int = Field(20, ge=0, le=20)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    memory_max_messages: int = Field(500_000, gt=0)
    memory_max_bytes: int = Field(1024**3, gt=0)
    cache_ttl_s: float = Field(1.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("port", mode="before")
    @classmethod
    def _not_a_service_link(cls, value: Any) -> Any:
        # SES_TRACKER_PORT=tcp://10.0.0.1:8000 is Kubernetes' service link, not ours.
        if isinstance(value, str) and value.startswith("tcp://"):
            return 8000
        return value

    @field_validator("read_tokens")
    @classmethod
    def _read_tokens(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # Only when set: pydantic runs no validator on a default. Messages name the
        # entry by position and name, never a token (service.access).
        if value is None or not value.get_secret_value().strip():
            return None  # set empty (a templated manifest): as unset
        entries = parse_read_tokens(value.get_secret_value())
        api_token = info.data.get("api_token")
        if api_token is None:
            raise ValueError(
                "SES_TRACKER_READ_TOKENS is set without SES_TRACKER_API_TOKEN: with no API "
                "token the service is open to everyone, so a read-only token would limit "
                "nothing; set SES_TRACKER_API_TOKEN too"
            )
        if any(entry.token == api_token.get_secret_value() for entry in entries):
            raise ValueError("a read-only token equals SES_TRACKER_API_TOKEN")
        return value

    def read_token_entries(self) -> list[ReadToken]:
        """SES_TRACKER_READ_TOKENS, parsed (empty when unset)."""
        if self.read_tokens is None:
            return []
        return parse_read_tokens(self.read_tokens.get_secret_value())

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: str | None) -> str | None:
        for entry in split_list(value):
            if entry != "*" and ("/" in entry or (entry.count(":") > 1 and "[" not in entry)):
                raise ValueError(
                    f"{entry[:80]!r} is not a host name (give names like tracker.example.com, "
                    "no scheme or path; bracket IPv6 addresses)"
                )
        return value

    @field_validator("tag_dimensions")
    @classmethod
    def _tag_names(cls, value: str | None) -> str | None:
        parse_tag_names(value)  # raises ValueError, reported with the variable's name
        return value

    @field_validator("account_ids")
    @classmethod
    def _account_ids(cls, value: str | None) -> str | None:
        parse_account_ids(value)  # raises ValueError, reported with the variable's name
        return value

    def account_policy(self) -> AccountPolicy:
        """Whose account events count, and how many accounts alerting keeps."""
        return AccountPolicy.of(self.account_ids)

    @model_validator(mode="after")
    def _cluster_over_tcp(self) -> Settings:
        if self.redis_cluster and not self.redis_url:
            raise ValueError("SES_TRACKER_REDIS_CLUSTER needs SES_TRACKER_REDIS_URL (any node)")
        if self.redis_cluster and self.redis_url and self.redis_url.startswith("unix://"):
            raise ValueError("a Redis Cluster is reached over TCP: redis:// or rediss://")
        return self

    def redis_slot_group_count(self) -> int | None:
        """Slot groups of the keyspace (service.stores.redis.slots): None with one Redis."""
        return self.redis_slot_groups if self.redis_cluster else None

    def dimensions(self) -> Dimensions:
        """The dimensions figures are broken down by (service.dimensions)."""
        return Dimensions(tags=parse_tag_names(self.tag_dimensions))

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def worker_count(self) -> int:
        """Processes ``serve`` runs: ``auto`` is one per usable core (``service.cpus``:
        affinity and CPU quota, not a container's node)."""
        return usable_cpus() if self.workers == "auto" else int(self.workers)

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor (``service.logs``)."""
        values = [
            secret.get_secret_value()
            for secret in (
                self.api_token,
                self.firehose_access_key,
                self.alert_webhook_secret,
                self.kafka_sasl_password,
            )
            if secret is not None
        ]
        values += [entry.token for entry in self.read_token_entries()]
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

    def kafka_security(self) -> dict[str, Any]:
        """aiokafka's connection arguments for the configured security."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            cafile = str(self.kafka_ca_file) if self.kafka_ca_file else None
            options["ssl_context"] = create_ssl_context(cafile=cafile)
        if self.kafka_sasl_mechanism == "AWS_MSK_IAM":
            from consumers.msk import MskIamTokenProvider

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            options["sasl_mechanism"] = "OAUTHBEARER"
            options["sasl_oauth_token_provider"] = MskIamTokenProvider(region or "us-east-1")
            return options
        if self.kafka_security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism or "PLAIN"
            options["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return options

    def redis_options(self) -> dict[str, Any]:
        """redis-py's connection arguments beyond the URL: a private CA for rediss://."""
        if self.redis_ca_file is not None:
            return {"ssl_ca_certs": str(self.redis_ca_file)}
        return {}

    @property
    def nameservers(self) -> list[str]:
        """DNS servers for MX lookups (``host`` or ``host:port``); empty: the system's."""
        return _split(self.mx_nameservers)

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


class SettingsError(ValueError):
    """Settings that cannot run; ``problems`` name each variable and what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, ``.env`` and ``overrides``, or SettingsError.

    Every problem names its variable (``SES_TRACKER_PORT: Input should be a valid
    integer``); values are not repeated, as they may be secrets.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error.get("loc") else "?"
            problems.append(f"{PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError(problems) from None


def startup_problems(
    settings: Settings, environ: Mapping[str, str], dotenv: Mapping[str, str | None]
) -> list[str]:
    """Why a process must not start with these settings (fail closed): a
    ``SES_TRACKER_*`` name no setting has (a misspelt secret would leave a route
    open, a misspelt URL fall back to a default), and a secret that guards nothing
    (the API token and the Firehose key: at least 24 characters, no placeholder the
    examples ship). Never repeats a value."""
    problems = unknown_names(environ, dotenv)
    if settings.admin_port and settings.admin_port == settings.port:
        problems.append(
            f"{PREFIX}ADMIN_PORT is {PREFIX}PORT ({settings.port}): the admin port must be "
            "another port (0 turns it off)"
        )
    for name, secret in (
        ("API_TOKEN", settings.api_token),
        ("FIREHOSE_ACCESS_KEY", settings.firehose_access_key),
    ):
        if secret is not None and (problem := token_problem(secret.get_secret_value())):
            problems.append(f"{PREFIX}{name} {problem}")
    return problems


# What a misspelt prefix looks like: near SES_TRACKER_ but not it.
_PREFIX_LOOKALIKE = 0.8


def misspelt_prefixes(environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> list[str]:
    """Names that look like a setting under a misspelt prefix (``SES_TRAKER_*``,
    ``SESTRACKER_*``, ``SES_TRACKERPORT``): warned about, as they may belong to
    something else."""
    found = []
    for name in sorted({*environ, *dotenv}):
        upper = name.upper()
        if upper.startswith(PREFIX):
            continue
        head = upper[: len(PREFIX)]
        near = difflib.SequenceMatcher(None, head, PREFIX).ratio() >= _PREFIX_LOOKALIKE
        if near or upper.startswith(("SESTRACKER", "SES_TRACKER")):
            found.append(f"{name} looks like a setting with a misspelt {PREFIX} prefix; ignored")
    return found


def unknown_names(environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> list[str]:
    """``SES_TRACKER_*`` names that no setting has, each with the closest one."""
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    warnings = []
    for name in sorted({*environ, *dotenv}):
        if not name.startswith(PREFIX) or name in known:
            continue
        if name.removeprefix(PREFIX).startswith(_SERVICE_LINK):
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} is not a setting{hint}")
    return warnings


def split_list(value: str | None) -> list[str]:
    """A comma-separated setting's entries, trimmed, empty ones dropped."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


_split = split_list
