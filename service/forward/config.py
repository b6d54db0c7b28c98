"""Forwarding subscriptions, read from ``SES_TRACKER_FORWARD_FILE`` and checked like
the alert rules: every problem with file, line and field, nothing half-loaded.

    subscriptions:
      - name: crm
        url: https://crm.example.com/hooks/ses
        secret: a-long-random-string          # signs each POST (HMAC-SHA256)
        statuses: [bounced, complained]       # optional filters; all must match
        configuration_sets: [marketing]
        tags: {campaign: spring-sale}
        providers: [microsoft]

A URL must be https (http only to loopback). Where it may point is checked again
when it is used (``service.forward.egress``): never a private, link-local or
metadata address unless ``SES_TRACKER_FORWARD_ALLOW_PRIVATE`` says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service import yamlfile
from service.providers import PROVIDERS
from service.state import STATUSES
from service.urls import outbound_url

Status = Literal[STATUSES]  # type: ignore[valid-type]
Provider = Literal[PROVIDERS]  # type: ignore[valid-type]
MAX_SUBSCRIPTIONS = 50


class ForwardConfigError(ValueError):
    """A subscriptions file that cannot be used; the message names file, line and field."""


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    url: str = Field(repr=False, max_length=2_000)
    secret: str = Field(repr=False, min_length=16, max_length=512)
    statuses: tuple[Status, ...] = ()
    configuration_sets: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = ()
    tags: dict[
        Annotated[str, Field(min_length=1, max_length=128)],
        Annotated[str, Field(max_length=256)],
    ] = Field(default_factory=dict)
    providers: tuple[Provider, ...] = ()
    batch_size: int = Field(100, ge=1, le=500)

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        outbound_url(url)  # ValueError says what is wrong
        return url

    @property
    def host(self) -> str:
        """What logs name the subscription's receiver by: never the URL (it may
        carry a token in its path or query)."""
        return urlsplit(self.url).netloc

    @property
    def id(self) -> str:
        """Names its consumer group and lease: stable, URL-free."""
        return f"{self.name}-{hashlib.blake2b(self.url.encode(), digest_size=4).hexdigest()}"


class ForwardFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subscriptions: list[Subscription] = Field(max_length=MAX_SUBSCRIPTIONS)

    @field_validator("subscriptions")
    @classmethod
    def _unique_names(cls, subscriptions: list[Subscription]) -> list[Subscription]:
        names = [s.name for s in subscriptions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"subscription names must be unique: {', '.join(twice)}")
        return subscriptions


_FIELDS = set(Subscription.model_fields) | set(ForwardFile.model_fields)


def load_subscriptions(path: Path | None) -> list[Subscription]:
    """The subscriptions in ``path``; none when it is None."""
    if path is None:
        return []
    try:
        text = yamlfile.read(path, "forwarding")
    except yamlfile.YamlFileError as exc:
        raise ForwardConfigError(str(exc)) from None
    return parse_subscriptions(text, str(path))


def parse_subscriptions(text: str, origin: str = "<forward>") -> list[Subscription]:
    try:
        data, tree = yamlfile.parse(text, origin)
    except yamlfile.YamlFileError as exc:
        raise ForwardConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ForwardConfigError(f"{origin}: expected a mapping with a 'subscriptions' list")
    try:
        return ForwardFile.model_validate(data).subscriptions
    except ValidationError as exc:
        problems = yamlfile.describe(exc, tree, origin, _FIELDS.__contains__)
        raise ForwardConfigError("\n".join(problems)) from None


def describe(subscriptions: list[Subscription]) -> list[dict[str, Any]]:
    """What ``check-forward`` prints: each subscription without its URL or secret."""
    return [
        subscription.model_dump(mode="json", exclude={"url", "secret"})
        | {"host": subscription.host}
        for subscription in subscriptions
    ]
