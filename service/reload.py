"""Re-reading the rules and forwarding files while running: no rollout for an edit.

Two files can change under a running process: the alert rules
(``SES_TRACKER_ALERT_RULES``) and the forwarding subscriptions
(``SES_TRACKER_FORWARD_FILE``). Each process re-reads them

* on ``POST /-/reload`` on the admin port (``serve --workers``: the parent asks
  every worker, ``api.fleet``), whether or not they changed, and
* every ``SES_TRACKER_CONFIG_POLL_S``, when a file's content differs from the last
  content it read, so a ConfigMap edit (kubelet swaps the mounted file) reaches
  every replica and every worker on its own.

A file is checked whole before anything changes: one that fails (YAML, a field,
a missing file) leaves the running configuration in place and says why, with
file and line, in a ``config_reload_failed`` log line and in
``ses_tracker_config_reload_success{file}`` (0 until a good read). A failed content
is reported once, not at every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from service import audit, yamlfile
from service.alerts.engine import Alerting
from service.alerts.rules import RulesError, parse_rules
from service.audit import Auditor
from service.forward.config import ForwardConfigError, parse_subscriptions
from service.forward.sender import Forwarder
from service.outages import OUTAGES, STORE
from service.settings import Settings
from service.stores.base import StoreUnavailable
from service.stores.redis.errors import REDIS_UNAVAILABLE

log = structlog.get_logger(__name__)

RULES, FORWARDING = "rules", "forwarding"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One file's reload, as ``POST /-/reload`` answers it."""

    file: str  # RULES or FORWARDING
    path: str
    ok: bool
    changed: bool  # its content differed from the last read
    error: str | None = None  # with file and line
    loaded: int | None = None  # rules or subscriptions now running

    def answer(self) -> dict[str, Any]:
        return {
            "file": self.file, "path": self.path, "ok": self.ok, "changed": self.changed,
            "error": self.error, "loaded": self.loaded,
        }  # fmt: skip


@dataclass(slots=True)
class _Watched:
    name: str
    path: Path
    # Parses the text (raising ValueError with file and line) and applies it; how
    # many rules or subscriptions now run.
    apply: Callable[[str], Awaitable[int]]
    digest: bytes | None = None  # of the content last read, good or bad
    success: bool = True  # the last read was applied
    last_success_s: float = 0.0


class ConfigFiles:
    """The files this process re-reads, and how their reloads went (metrics)."""

    def __init__(
        self,
        settings: Settings,
        alerting: Alerting,
        forwarder: Forwarder | None,
        auditor: Auditor | None = None,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self._clock_s = clock_s
        self._auditor = auditor
        self.reloads: Counter[tuple[str, str]] = Counter()  # (file, "success" | "failure")
        self._watched: list[_Watched] = []
        self._applying = asyncio.Lock()
        if settings.alert_rules is not None:
            dimensions = settings.dimensions()

            async def rules(text: str) -> int:
                ruleset = parse_rules(text, str(settings.alert_rules), dimensions)
                await alerting.apply_rules(ruleset)
                return len(ruleset.rules)

            self._watched.append(_Watched(RULES, settings.alert_rules, rules))
        if settings.forward_file is not None and forwarder is not None:

            async def subscriptions(text: str) -> int:
                parsed = parse_subscriptions(text, str(settings.forward_file))
                await forwarder.apply(parsed)
                return len(parsed)

            self._watched.append(_Watched(FORWARDING, settings.forward_file, subscriptions))
        # What start-up read is what runs: polling compares against it.
        for watched in self._watched:
            with contextlib.suppress(yamlfile.YamlFileError):
                watched.digest = _digest(yamlfile.read(watched.path, watched.name))
            watched.last_success_s = clock_s()

    @property
    def watching(self) -> bool:
        return bool(self._watched)

    def figures(self) -> list[tuple[str, bool, float]]:
        """(file, last read applied, when one last was) for each watched file."""
        return [(w.name, w.success, w.last_success_s) for w in self._watched]

    async def reload(self, actor: str = audit.ADMIN_PORT) -> list[Outcome]:
        """Re-read every file, changed or not (``POST /-/reload``; SIGHUP), each
        outcome in the audit log under ``actor``."""
        outcomes = []
        for watched in self._watched:
            try:
                text = yamlfile.read(watched.path, watched.name)
            except yamlfile.YamlFileError as exc:
                outcomes.append(self._failed(watched, str(exc), changed=True))
                continue
            outcomes.append(await self._apply(watched, text))
        for outcome in outcomes:
            await self._audited(actor, outcome)
        return outcomes

    async def _audited(self, actor: str, outcome: Outcome) -> None:
        if self._auditor is None:
            return
        await self._auditor.record(
            actor,
            audit.CONFIG_RELOADED,
            "reloaded" if outcome.ok else "kept the running configuration",
            target=outcome.file,
            detail=outcome.error if not outcome.ok else f"{outcome.loaded} loaded",
        )

    async def watch(
        self, every_s: float, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    ) -> None:
        """Every ``every_s``, re-read a file whose content changed, until cancelled.

        A file that cannot be read (removed, mid-swap) is said once, and read again
        when it comes back; a content that fails is said once too.
        """
        unreadable: set[str] = set()
        while True:
            await sleep(every_s)
            for watched in self._watched:
                try:
                    text = yamlfile.read(watched.path, watched.name)
                except yamlfile.YamlFileError as exc:
                    if watched.name not in unreadable:
                        unreadable.add(watched.name)
                        self._failed(watched, str(exc), changed=True)
                    continue
                came_back = watched.name in unreadable
                unreadable.discard(watched.name)
                if came_back or _digest(text) != watched.digest:
                    outcome = await self._apply(watched, text)  # says its own failures
                    # Audited once a content is done with: applied, or refused for
                    # itself (an outage is tried again next poll, not recorded each).
                    if outcome.ok or watched.digest == _digest(text):
                        await self._audited(audit.FILE_CHANGE, outcome)

    async def _apply(self, watched: _Watched, text: str) -> Outcome:
        # One at a time: a reload asked for while the poll applies waits for it.
        async with self._applying:
            digest = _digest(text)
            changed = digest != watched.digest
            try:
                loaded = await watched.apply(text)
            except (RulesError, ForwardConfigError, yamlfile.YamlFileError) as exc:
                # The content is wrong: said once, read again when it changes.
                watched.digest = digest
                return self._failed(watched, str(exc), changed=changed)
            except Exception as exc:
                # Not the file's fault (the store, mid-change): the running
                # configuration stays, and the next poll tries this content again.
                reason = f"{watched.path}: not applied: {type(exc).__name__}: {exc}"
                if isinstance(exc, (StoreUnavailable, *REDIS_UNAVAILABLE)):
                    # An outage: one line for all of it (service.outages).
                    OUTAGES.failed(STORE, exc, part=f"reloading {watched.name}")
                    return self._failed(watched, reason, changed=changed, said=True)
                return self._failed(watched, reason, changed=changed)
            watched.digest = digest
            watched.success, watched.last_success_s = True, self._clock_s()
            self.reloads[(watched.name, "success")] += 1
            log.info("config_reloaded", file=watched.name, path=str(watched.path), loaded=loaded)
            return Outcome(watched.name, str(watched.path), True, changed, None, loaded)

    def _failed(
        self, watched: _Watched, error: str, *, changed: bool, said: bool = False
    ) -> Outcome:
        watched.success = False
        self.reloads[(watched.name, "failure")] += 1
        if not said:
            # The running configuration stays; the error names file and line.
            log.error("config_reload_failed", file=watched.name, error=error, kept="running")
        return Outcome(watched.name, str(watched.path), False, changed, error)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
