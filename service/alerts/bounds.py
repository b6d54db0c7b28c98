"""Every notice bounded in size before it is stored, sent, served or logged.

A finding quotes what events carried (accounts, domains, message ids), so its size
follows the input unless cut here: the engine passes every finding through
:func:`bounded` before it becomes a record, a history entry and an outbox entry.
Lists show their first few and a count of the rest; texts are cut with an ellipsis.
``subjects`` (what the alert is about, compared to tell news) are kept whole: they
come from stores that are bounded themselves.
"""

from __future__ import annotations

import dataclasses
import itertools

from service.alerts.lifecycle import Finding

ACCOUNTS_SHOWN = 5
TITLE_CHARS = 200
SUMMARY_CHARS = 2_000
FIGURES_KEPT = 20
WORST_KEPT = 10
EXAMPLES_KEPT = 5
LABEL_CHARS = 100
VALUE_CHARS = 300
MORE = "and more"


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_accounts(finding: Finding, shown: int = ACCOUNTS_SHOWN) -> Finding:
    """A ``sending_disabled`` finding naming its first few accounts and a count."""
    if finding.kind != "sending_disabled" or len(finding.subjects) <= shown:
        return finding
    names = sorted(finding.subjects)[:shown]
    rest = len(finding.subjects) - shown
    figures = {name: finding.figures[name] for name in names if name in finding.figures}
    figures["more accounts"] = str(rest)
    return dataclasses.replace(
        finding,
        title=(
            f"SES sending is paused for {len(finding.subjects)} accounts: "
            f"{', '.join(names)} and {rest} more"
        ),
        figures=figures,
    )


def bounded(finding: Finding) -> Finding:
    """``finding`` within the limits above (unchanged when it already is)."""
    finding = shown_accounts(finding)
    figures = _first(finding.figures, FIGURES_KEPT)
    worst = _first(finding.worst, WORST_KEPT)
    examples = tuple(
        dataclasses.replace(
            example,
            message_id=cut(example.message_id, VALUE_CHARS),
            recipient=None if example.recipient is None else cut(example.recipient, VALUE_CHARS),
            detail=None if example.detail is None else cut(example.detail, VALUE_CHARS),
        )
        for example in finding.examples[:EXAMPLES_KEPT]
    )
    title = cut(finding.title, TITLE_CHARS)
    summary = cut(finding.summary, SUMMARY_CHARS)
    if (
        figures == finding.figures
        and worst == finding.worst
        and examples == finding.examples
        and title == finding.title
        and summary == finding.summary
    ):
        return finding
    return dataclasses.replace(
        finding, title=title, summary=summary, figures=figures, worst=worst, examples=examples
    )


def _first(items: dict[str, str], kept: int) -> dict[str, str]:
    """The first ``kept`` entries, cut, and how many more there were."""
    first = {
        cut(label, LABEL_CHARS): cut(value, VALUE_CHARS)
        for label, value in itertools.islice(items.items(), kept)
    }
    if len(items) > kept:
        first[MORE] = str(len(items) - kept)
    return first
