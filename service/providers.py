"""Mailbox providers: who hosts a recipient's mailbox, from its domain.

Reputation trouble is usually one provider (Microsoft blocking, Gmail
spam-foldering), and a provider spans many domains (hotmail.com, outlook.com,
live.com ... are one Microsoft), so figures are also grouped by provider. The
consumer domains below are the ones a sender sees in volume; a company domain is
``other`` unless MX resolution (``SES_TRACKER_RESOLVE_MX``) finds its mail hosted by
one of the providers, by the MX host suffixes in :data:`MX_SUFFIXES`.

The names are the contract's closed set (README, Dimensions), so they are safe as
metric labels whatever recipients send us.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

PROVIDERS: tuple[str, ...] = (
    "gmail",
    "microsoft",
    "yahoo",
    "apple",
    "proton",
    "gmx",
    "yandex",
    "zoho",
    "other",
)
OTHER = "other"
_NONE_RESOLVED: Mapping[str, str] = MappingProxyType({})

_CONSUMER: dict[str, tuple[str, ...]] = {
    "gmail": ("gmail.com", "googlemail.com"),
    "microsoft": (
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "passport.com",
        "windowslive.com",
        "outlook.fr",
        "outlook.de",
        "outlook.es",
        "outlook.it",
        "hotmail.co.uk",
        "hotmail.fr",
        "hotmail.de",
        "hotmail.it",
        "hotmail.es",
        "live.co.uk",
        "live.fr",
        "live.de",
        "live.it",
        "live.nl",
        "live.com.au",
    ),
    # AOL's mailboxes run on Yahoo's servers (one owner, one filter).
    "yahoo": (
        "yahoo.com",
        "ymail.com",
        "rocketmail.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "yahoo.de",
        "yahoo.it",
        "yahoo.es",
        "yahoo.ca",
        "yahoo.com.au",
        "yahoo.co.jp",
        "aol.com",
        "aim.com",
    ),
    "apple": ("icloud.com", "me.com", "mac.com"),
    "proton": ("proton.me", "protonmail.com", "protonmail.ch", "pm.me"),
    # web.de and mail.com are GMX's sister brands, on the same platform.
    "gmx": ("gmx.de", "gmx.net", "gmx.com", "gmx.at", "gmx.ch", "web.de", "mail.com"),
    "yandex": ("yandex.ru", "yandex.com", "ya.ru", "yandex.by", "yandex.kz", "yandex.ua"),
    "zoho": ("zoho.com", "zohomail.com", "zohomail.eu", "zoho.eu"),
}

CONSUMER_DOMAINS: dict[str, str] = {
    domain: provider for provider, domains in _CONSUMER.items() for domain in domains
}

# MX host suffixes that identify a provider hosting a company's mail.
MX_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".google.com", "gmail"),
    (".googlemail.com", "gmail"),
    (".mail.protection.outlook.com", "microsoft"),
    (".outlook.com", "microsoft"),
    (".yahoodns.net", "yahoo"),
    (".mail.icloud.com", "apple"),
    (".protonmail.ch", "proton"),
    (".gmx.net", "gmx"),
    (".web.de", "gmx"),
    (".yandex.net", "yandex"),
    (".yandex.ru", "yandex"),
    (".zoho.com", "zoho"),
    (".zoho.eu", "zoho"),
)


def provider_of_domain(domain: str, resolved: Mapping[str, str] = _NONE_RESOLVED) -> str:
    """The provider of a consumer domain, else of a domain whose MX records were
    ``resolved`` (``service.mx``); ``other`` for any other domain."""
    return CONSUMER_DOMAINS.get(domain) or resolved.get(domain) or OTHER


def provider_of_mx(hosts: list[str]) -> str:
    """The provider whose servers the MX ``hosts`` name (lowest preference first)."""
    for host in hosts:
        name = "." + host.lower().rstrip(".")
        for suffix, provider in MX_SUFFIXES:
            if name.endswith(suffix):
                return provider
    return OTHER
