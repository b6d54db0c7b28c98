"""The dimensions figures are broken down by (README, Dimensions).

Per message: ``configuration_set`` (``mail.tags["ses:configuration-set"]``),
``identity`` (the sending domain: ``ses:from-domain``, else the domain of
``mail.source``) and ``tag:NAME`` for each tag key an operator lists in
``SES_TRACKER_TAG_DIMENSIONS``. Per recipient: ``domain`` and ``provider``
(``service.providers``).

A change is counted under one *group* per dimension, written ``<dimension>=<value>``
(``configuration_set=marketing``, ``tag:campaign=spring``, ``provider=gmail``); a
message without the value counts under ``(none)``. Groups are what the statistics
buckets and history rollups key their figures by (``service.stats``), and their
number per bucket is bounded there, since every value comes from senders or
recipients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.events import MailInfo
from service.providers import OTHER, provider_of_domain

MESSAGE_DIMENSIONS = ("configuration_set", "identity")
RECIPIENT_DIMENSIONS = ("domain", "provider")
TAG_PREFIX = "tag:"
NONE = "(none)"
# Each tag dimension multiplies what every change counts; a handful is plenty.
MAX_TAG_DIMENSIONS = 5
CONFIGURATION_SET_TAG = "ses:configuration-set"
FROM_DOMAIN_TAG = "ses:from-domain"


class UnknownDimension(ValueError):
    """A dimension name that is neither built in nor a configured tag."""


def parse_tag_names(raw: str | None) -> tuple[str, ...]:
    """``SES_TRACKER_TAG_DIMENSIONS`` (comma-separated tag keys) as names."""
    names = tuple(dict.fromkeys(n.strip() for n in (raw or "").split(",") if n.strip()))
    if len(names) > MAX_TAG_DIMENSIONS:
        raise ValueError(f"at most {MAX_TAG_DIMENSIONS} tag dimensions, got {len(names)}")
    for name in names:
        if "=" in name or "|" in name:
            raise ValueError(f"tag dimension {name!r}: '=' and '|' are not allowed")
    return names


def domain_of(address: str) -> str:
    _, at, domain = address.rpartition("@")
    return domain if at and domain else NONE


@dataclass(frozen=True, slots=True)
class Dimensions:
    """Which dimensions this deployment counts, and how recipients map to providers.

    ``resolved`` holds providers found from MX records (``service.mx``), filled off
    the hot path; a domain not in it yet is ``other``, and is handed to
    ``on_unknown`` (the MX resolver's ``note``) when there is one.
    """

    tags: tuple[str, ...] = ()
    resolved: Mapping[str, str] = field(default_factory=dict)
    on_unknown: Callable[[str], None] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (
            *MESSAGE_DIMENSIONS,
            *(TAG_PREFIX + tag for tag in self.tags),
            *RECIPIENT_DIMENSIONS,
        )

    def check(self, name: str) -> str:
        """``name`` if it is a dimension here, else :class:`UnknownDimension`."""
        if name not in self.names:
            raise UnknownDimension(
                f"unknown dimension {name!r}: expected one of {', '.join(self.names)}"
            )
        return name

    def message_groups(self, mail: MailInfo) -> tuple[str, ...]:
        """The groups every change of this message counts under, besides its
        recipient's."""
        tags = mail.tags
        groups = [
            "configuration_set=" + (mail.configuration_set or NONE),
            "identity=" + identity_of(mail),
        ]
        for tag in self.tags:
            groups.append(f"{TAG_PREFIX}{tag}={first_value(tags.get(tag)) or NONE}")
        return tuple(groups)

    def provider(self, domain: str) -> str:
        return provider_of_domain(domain, self.resolved)

    def providers(self, addresses: Iterable[str]) -> dict[str, str]:
        """domain -> provider for the recipients' domains that are not ``other``:
        what a merge needs to group them (``MessageWrite.providers``)."""
        found: dict[str, str] = {}
        for address in addresses:
            domain = domain_of(address)
            if domain not in found:
                provider = self.provider(domain)
                if provider != OTHER:
                    found[domain] = provider
                elif self.on_unknown is not None and domain != NONE:
                    self.on_unknown(domain)
        return found


def recipient_groups(address: str, providers: Mapping[str, str]) -> tuple[str, str]:
    """The ``domain=`` and ``provider=`` groups of one recipient (merge.lua's twin)."""
    domain = domain_of(address)
    return "domain=" + domain, "provider=" + providers.get(domain, OTHER)


def identity_of(mail: MailInfo) -> str:
    return identity_from(mail.tags, mail.source)


def identity_from(tags: Mapping[str, Any], source: str | None) -> str:
    """The sending domain: ``ses:from-domain``, else the domain of ``source``."""
    from_domain = first_value(tags.get(FROM_DOMAIN_TAG))
    if from_domain:
        return from_domain.lower()
    source = source or ""
    # mail.source may carry a display name: "Name <sender@example.com>".
    address = source.rpartition("<")[2].rstrip(">").strip()
    _, at, domain = address.rpartition("@")
    return domain.lower() if at and domain else NONE


def dimension_of(group: str) -> str:
    """``provider`` from ``provider=gmail``."""
    return group.partition("=")[0]


def first_value(value: Any) -> str | None:
    """A tag's value: SES sends each tag as a list of one string."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None
