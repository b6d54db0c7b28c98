"""Where alerts go: ``SES_TRACKER_ALERT_WEBHOOKS`` read and checked, and request signing.

A webhook URL is a credential (whoever holds a Slack or Discord webhook URL can
post to the channel), so a sink prints as its kind and host only, never its URL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Signing is shared with forwarding; it lives with the posts.
from service.outbound import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from service.urls import LOOPBACK_HOSTS, outbound_url

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Sink", "parse_webhooks", "sign", "verify"]

KINDS = ("slack", "teams", "discord", "googlechat", "webhook")

# The hosts each service issues webhook URLs on; a URL elsewhere is most likely
# pasted under the wrong kind, and its payloads would be refused.
_HOSTS: dict[str, tuple[str, ...]] = {
    "slack": ("hooks.slack.com",),
    "teams": (".logic.azure.com", ".powerplatform.com", ".powerautomate.com"),
    "discord": ("discord.com", "discordapp.com", ".discord.com"),
    "googlechat": ("chat.googleapis.com",),
}


class SinkConfigError(ValueError):
    """A webhook entry that cannot work; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class Sink:
    kind: str
    url: str = field(repr=False)
    host: str

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.host}"

    @property
    def id(self) -> str:
        """Stable across replicas and restarts (it names the sink's outbox), URL-free."""
        digest = hashlib.blake2b(self.url.encode(), digest_size=6).hexdigest()
        return f"{self.kind}-{digest}"


def parse_webhooks(text: str | None) -> list[Sink]:
    """``kind=url`` entries, comma-separated, each checked; [] when unset."""
    sinks: list[Sink] = []
    for position, entry in enumerate((text or "").split(","), 1):
        entry = entry.strip()
        if not entry:
            continue
        kind, sep, url = entry.partition("=")
        kind = kind.strip().lower()
        where = f"SES_TRACKER_ALERT_WEBHOOKS entry {position}"
        if not sep:
            raise SinkConfigError(f"{where}: expected kind=url, got no '='")
        if kind not in KINDS:
            raise SinkConfigError(
                f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        sinks.append(_checked(kind, url.strip(), where))
    names = [s.name + s.url for s in sinks]
    if len(set(names)) != len(names):
        raise SinkConfigError("SES_TRACKER_ALERT_WEBHOOKS: the same webhook is listed twice")
    return sinks


def _checked(kind: str, url: str, where: str) -> Sink:
    try:
        parts = outbound_url(url)
    except ValueError as exc:
        raise SinkConfigError(f"{where} ({kind}): {exc}") from exc
    host = (parts.hostname or "").lower()
    port = parts.port
    loopback = host in LOOPBACK_HOSTS
    expected = _HOSTS.get(kind)
    if (
        expected
        and not loopback
        and not any(host == h or (h.startswith(".") and host.endswith(h)) for h in expected)
    ):
        raise SinkConfigError(
            f"{where} ({kind}): host {host} is not where {kind} issues webhooks "
            f"({', '.join(h.lstrip('.') for h in expected)})"
        )
    if kind == "discord" and not loopback and not parts.path.startswith("/api/webhooks/"):
        raise SinkConfigError(f"{where} (discord): path must start with /api/webhooks/")
    return Sink(kind, url, host if port is None else f"{host}:{port}")
